"""``diffengine bench``: the CPU comparison is fair and reported, the batch finder, the FLOP counter, the GPU path."""
import json

import pytest
import torch

from diffengine.entry_point import main
from diffengine.tools.bench.cpu import build_cpu_runner, median_interval
from diffengine.tools.bench.flops import count_training_flops, size_flops
from diffengine.tools.bench.gpu import busy_seconds, find_largest_batch, memory_probe
from diffengine.tools.bench.models import architecture_configs, model_kwargs_of, optimizer_settings_of, packaged_config
from diffengine.tools.bench.plain_loop import PlainLoop, clip_gradients
from diffengine.tools.bench.startup import time_to_first_iteration


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory):
    """The demo's assets with 64 images in 2 shards (the demo writes 2048)."""
    from diffengine.tools.demo_assets import make_demo_assets
    return make_demo_assets(tmp_path_factory.mktemp("demo"), num_images=64, images_per_shard=32, progress=False)


def test_cpu_mode_writes_every_figure(demo_data, tmp_path):
    out = tmp_path / "cpu.json"
    argv = ["bench", "cpu", "--rounds", "2", "--iters-per-round", "1", "--warmup", "1", "--batch-size", "2",
            "--no-startup", "--data-dir", str(demo_data), "--work-dir", str(tmp_path), "--out", str(out)]
    assert main(argv) == 0
    report = json.loads(out.read_text())
    assert report["mode"] == "cpu" and report["command"] == ["diffengine", *argv]
    assert {"platform", "cpu_count", "versions"} <= set(report["machine"])
    assert report["machine"]["versions"]["torch"] == torch.__version__
    cpu = report["cpu"]
    assert cpu["batch_size"] == 2 and len(cpu["per_round"]) == 2
    assert [r["first"] for r in cpu["per_round"]] == ["diffengine", "plain"]  # alternating
    for side in ("diffengine_s_per_iter", "plain_s_per_iter", "ratio"):
        assert cpu[side]["median"] > 0 and cpu[side]["ci95_of_median"] is None  # 2 rounds: too few
    assert cpu["ratio"]["goal"] == 1.05 and "in memory" in cpu["data"] and "startup" not in cpu


@pytest.mark.slow
def test_time_to_first_iteration_of_a_real_training_command(demo_data, tmp_path):
    startup = time_to_first_iteration(demo_data / "t5", demo_data / "stage1", demo_data / "shards", tmp_path)
    assert startup["command"][1:4] == ["-m", "diffengine", "wds_train"]
    assert 0 < startup["config_logged_s"] < startup["runner_built_s"] < startup["first_iteration_s"]


def test_plain_loop_and_diffengine_make_the_same_update(demo_data, tmp_path):
    from mmengine.hooks import Hook

    class Capture(Hook):
        priority = "LOWEST"

        def before_train_iter(self, runner, batch_idx, data_batch=None):
            self.rng, self.inputs = torch.get_rng_state(), data_batch["inputs"]

    runner, cfg = build_cpu_runner(demo_data / "t5", demo_data / "stage1", demo_data / "shards",
                                   str(tmp_path), max_iters=1, batch_size=4)
    plain = PlainLoop(demo_data / "t5", demo_data / "stage1", model_kwargs_of(cfg), *optimizer_settings_of(cfg))
    plain.copy_trainable_from(runner.model)
    before = plain.trainable_state()
    capture = Capture()
    runner.register_hook(capture, capture.priority)
    runner.train()  # one iteration of the real loop, hooks, GuardedOptimWrapper and train_step

    torch.set_rng_state(capture.rng)  # the same VAE sample, noise, timesteps, caption dropout, dropout
    plain.step(capture.inputs)
    after = plain.trainable_state()
    theirs = {f"{part}.{name}": p.detach() for part, model in
              (("text", runner.model.language.model), ("unet", runner.model.denoiser),
               ("adapter", runner.model.adapter)) for name, p in model.named_parameters() if p.requires_grad}
    assert after.keys() == theirs.keys() and len(after) > 100
    assert sum(not torch.equal(after[k], before[k]) for k in after) == len(after)  # every weight moved
    for name, value in after.items():
        torch.testing.assert_close(value, theirs[name], rtol=1e-5, atol=1e-6, msg=name)


def test_device_busy_time_counts_overlapping_kernels_once():
    assert busy_seconds([]) == 0
    assert busy_seconds([(5, 7), (0, 2), (1, 3), (6, 6.5)]) == 3 + 2  # [0, 3] and [5, 7]


def test_largest_batch_search_doubles_then_bisects_and_frees_between_tries():
    tried, freed = [], []

    def try_batch(batch_size):
        tried.append(batch_size)
        if batch_size > 37:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    fits = memory_probe(try_batch, lambda: freed.append(tried[-1]))
    assert find_largest_batch(fits, limit=1024) == 37
    assert tried == [1, 2, 4, 8, 16, 32, 64, 48, 40, 36, 38, 37]
    assert freed == tried
    assert find_largest_batch(memory_probe(lambda b: None, lambda: None), limit=100) == 100
    assert find_largest_batch(memory_probe(try_batch, lambda: None), limit=20) == 20

    def never(batch_size):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    assert find_largest_batch(memory_probe(never, lambda: None), limit=8) == 0


def test_flop_count_is_positive_adds_up_and_is_linear_in_batch(demo_data):
    architecture = architecture_configs("tiny", demo_data)
    kwargs = model_kwargs_of(packaged_config("tiny"))
    one = count_training_flops(architecture, kwargs, resolution=32, batch_size=1)
    two = count_training_flops(architecture, kwargs, resolution=32, batch_size=2)
    parts = ("vae_encoder_forward", "lm_forward_backward", "adapter_forward_backward", "denoiser_forward_backward")
    for part in parts:
        assert one[part] > 0
        assert two[part] == pytest.approx(one[part])  # per sample: the total doubles with the batch
    assert one["step_total"] == pytest.approx(sum(one[p] for p in parts))
    assert one["step_counted"] == pytest.approx(one["step_total"])
    assert one["step_total_from_latents"] == pytest.approx(one["step_total"] - one["vae_encoder_forward"])


def test_median_interval_uses_order_statistics():
    values = [float(v) for v in range(10, 0, -1)]
    assert median_interval(values) == (2.0, 9.0)  # 97.9 % coverage; (3, 8) would be 89 %
    assert median_interval(values[:5]) is None


def test_gpu_mode_runs_on_cpu_with_the_tiny_models(demo_data, tmp_path):
    out = tmp_path / "gpu.json"
    assert main(["bench", "gpu", "--size", "tiny", "--device", "cpu", "--batch-sizes", "2", "max",
                 "--max-batch", "4", "--iters", "1", "--warmup", "1", "--peak-tflops", "1",
                 "--data-dir", str(demo_data), "--out", str(out), "--cfg-options", "model.channels_last=True",
                 "--profile", "1"]) == 0
    gpu = json.loads(out.read_text())["gpu"]
    assert gpu["cfg_options"] == ["model.channels_last=True"]
    rows = [(r["loop"], r["inputs"], r["batch_size"]) for r in gpu["rows"]]
    assert rows == [("paper loop", "pixels", 1), *[("diffengine fast defaults", inputs, b)
                                                  for inputs in ("pixels", "latents") for b in (2, 4)]]
    assert "profile" not in gpu["rows"][0]  # the paper's loop is not profiled
    for row in gpu["rows"][1:]:
        profile = row["profile"]
        trace = tmp_path / f"gpu_trace_{row['inputs']}_b{row['batch_size']}.json"
        assert profile["trace"] == str(trace)
        assert json.loads(trace.read_text())["traceEvents"]  # Chrome's trace format
        names = [op["name"] for op in profile["top_ops"]]
        # the step's matrix products and the optimizer are among what the host spent its time on
        assert any(name in ("aten::addmm", "aten::mm", "aten::bmm", "aten::convolution_backward",
                            "aten::mkldnn_convolution", "aten::_foreach_addcdiv_") for name in names), names
        assert profile["device_busy_fraction"] is None  # no GPU: no device time
    flops = gpu["flops_per_sample"]
    for row in gpu["rows"]:
        per_sample = flops["step_total"] if row["inputs"] == "pixels" else flops["step_total_from_latents"]
        assert row["mfu"] == pytest.approx(row["samples_per_s"] * per_sample / 1e12)


def test_gpu_mode_cfg_options_reach_the_model(demo_data, tmp_path, capsys):
    assert main(["bench", "gpu", "--size", "tiny", "--device", "cpu", "--no-paper", "--batch-sizes", "1",
                 "--data-dir", str(demo_data), "--out", str(tmp_path / "gpu.json"),
                 "--cfg-options", "model.caption_dropout=2"]) != 0
    assert "caption_dropout" in capsys.readouterr().err


@pytest.mark.parametrize("option, expected", [
    ("model.torch_compil=True", "model.torch_compil: LaViBridge has no option 'torch_compil' (did you mean "
                                "'torch_compile'?)"),
    ("optim_wrapper.optimizer.lr=-1", "optim_wrapper.optimizer.lr must be a number > 0, got -1"),
    ("model.gradient_checkpointing=True",
     "--cfg-options model.gradient_checkpointing: bench gpu sets it itself (use --gradient-checkpointing)"),
])
def test_gpu_mode_cfg_options_are_checked_as_train_checks_them_before_the_run(option, expected, tmp_path, capsys,
                                                                               monkeypatch):
    monkeypatch.setattr("diffengine.tools.bench.gpu.size_flops", lambda *a: pytest.fail("ran"))
    assert main(["bench", "gpu", "--size", "tiny", "--device", "cpu", "--out", str(tmp_path / "gpu.json"),
                 "--cfg-options", option]) == 2
    assert f"diffengine: error: {expected}" in capsys.readouterr().err


def test_gpu_mode_counts_the_flops_of_the_model_its_options_make(demo_data):
    # the MFU's denominator: a larger LoRA is more FLOPs per sample, counted
    plain, wider = (size_flops("tiny", demo_data, 32, packaged_config("tiny", *options))["per_sample"]["step_total"]
                    for options in ((), ("model.vision_lora.rank=32",)))
    assert wider > plain


@pytest.mark.parametrize("clip_grad", [dict(max_norm=1.0), None, dict(type="value", clip_value=0.01)])
def test_paper_loop_clips_gradients_as_the_configs_optim_wrapper_does(clip_grad):
    from mmengine.optim import OptimWrapper

    cfg = packaged_config("tiny")
    cfg.optim_wrapper.clip_grad = clip_grad
    grads = [torch.tensor([3.0, -0.5, 0.004, -0.2, 1.0]), torch.tensor([-2.0, 0.0, 0.5, 0.3, -0.003])]
    mine, theirs = ([torch.nn.Parameter(torch.zeros(5)) for _ in grads] for _ in range(2))
    for weight, grad in (*zip(mine, grads, strict=True), *zip(theirs, grads, strict=True)):
        weight.grad = grad.clone()
    clip_gradients(mine, optimizer_settings_of(cfg)[2])
    reference = OptimWrapper(torch.optim.SGD(theirs, lr=0.1), clip_grad=clip_grad)
    if clip_grad:
        reference._clip_grad()
    for weight, their in zip(mine, theirs, strict=True):
        torch.testing.assert_close(weight.grad, their.grad)
    assert any(not torch.equal(w.grad, g) for w, g in zip(mine, grads, strict=True)) == bool(clip_grad)


def test_loader_mode_writes_a_row_per_resolution_and_worker_count(tmp_path):
    out = tmp_path / "loader.json"
    assert main(["bench", "loader", "--num-images", "8", "--num-samples", "16", "--resolutions", "32",
                 "--workers", "0", "1", "--batch-size", "4", "--shuffle-buffer", "4", "--repeats", "1",
                 "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["mode"] == "loader" and report["images"]["count"] == 8
    assert [(row["resolution"], row["workers"]) for row in report["rows"]] == [(32, "raw"), (32, 0), (32, 1)]
    assert all(row["images_per_s"] > 0 and row["cpu_ms_per_image"] > 0 for row in report["rows"])
    assert 0 < report["rows"][1]["decode_share"] <= 1


@pytest.mark.parametrize("argv, expected", [
    (["loader", "--batch-size", "0"], "--batch-size: must be >= 1, got 0"),
    (["loader", "--num-samples", "0"], "--num-samples: must be >= 1, got 0"),
    (["loader", "--repeats", "0"], "--repeats: must be >= 1, got 0"),
    (["loader", "--shuffle-buffer", "-5"], "--shuffle-buffer: must be >= 0, got -5"),
    (["loader", "--workers", "0", "-1"], "--workers: must be >= 0, got -1"),
    (["flops", "--resolution", "33"], "--resolution: must be a multiple of 8 pixels, got 33"),
    (["gpu", "--peak-tflops", "nan"], "--peak-tflops: must be a finite number > 0, got nan"),
    (["gpu", "--peak-tflops", "-1"], "--peak-tflops: must be a finite number > 0, got -1"),
])
def test_out_of_range_options_are_refused_before_the_run(argv, expected, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", *argv])
    assert exit_info.value.code == 2
    assert expected in capsys.readouterr().err


def test_an_earlier_report_or_an_unusable_out_is_refused_before_the_run(tmp_path, capsys, monkeypatch):
    from diffengine.tools import bench

    def never(args):
        raise AssertionError("the benchmark ran")

    monkeypatch.setattr(bench, "run_loader", never)
    earlier = tmp_path / "bench_loader.json"
    earlier.write_text("{}")
    assert main(["bench", "loader", "--out", str(earlier)]) == 2
    assert capsys.readouterr().err.strip() == (f"diffengine: error: {earlier} already exist(s): not overwriting "
                                               "(--overwrite replaces)")
    assert main(["bench", "loader", "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == f"diffengine: error: --out {tmp_path} is a folder: name the file to write"
    assert main(["bench", "loader", "--out", str(earlier / "report.json")]) == 2
    assert "cannot create this folder" in capsys.readouterr().err
    assert earlier.read_text() == "{}"
