"""Training that cannot silently go wrong: non-finite steps, exact resume, resumed options, portable work dirs."""
import itertools
import shutil
import signal
from pathlib import Path

import pytest
import torch
from mmengine.logging import MessageHub
from mmengine.optim import OptimWrapper

from diffengine.engine import FiniteWeightsHook, GuardedAmpOptimWrapper, GuardedOptimWrapper
from diffengine.engine.resume import find_resume_checkpoint
from diffengine.engine.runner import DiffEngineRunner
from diffengine.entry_point import build_parser, main
from diffengine.errors import ConfigError, NonFiniteTrainingError
from diffengine.models import LaViBridge
from diffengine.models.losses import TrainingObjective
from diffengine.tools.train import run
from tests.helpers import SignalHook, demo_cfg_options, train_killed

_hubs = itertools.count()


def toy_wrapper(cls=GuardedOptimWrapper, fused: bool = False, **kwargs):
    MessageHub.get_instance(f"toy_wrapper_{next(_hubs)}")  # a fresh hub: no count from another test
    weight = torch.nn.Parameter(torch.ones(3))
    optimizer = torch.optim.AdamW([{"params": [weight], "name": "adapter", "lr": 0.1}], lr=1.0, fused=fused)
    return weight, cls(optimizer=optimizer, **kwargs)


def step(wrapper, weight, scale: float) -> None:
    wrapper.update_params((weight * scale).sum())


def test_a_non_finite_gradient_skips_the_step_and_a_streak_stops_training():
    weight, wrapper = toy_wrapper(max_consecutive_nonfinite=3)
    step(wrapper, weight, 1.0)
    after_good_step = weight.detach().clone()
    moments = wrapper.optimizer.state[weight]["exp_avg"].clone()
    for _ in range(2):
        step(wrapper, weight, float("nan"))
    # untouched: weights and optimizer moments are those of the last finite step
    assert torch.equal(weight.detach(), after_good_step)
    assert torch.equal(wrapper.optimizer.state[weight]["exp_avg"], moments)
    assert (wrapper.skipped_steps, wrapper.consecutive_nonfinite) == (2, 2)
    step(wrapper, weight, 1.0)  # a finite step ends the streak
    assert wrapper.consecutive_nonfinite == 0 and not torch.equal(weight.detach(), after_good_step)
    step(wrapper, weight, float("inf"))
    step(wrapper, weight, float("nan"))
    with pytest.raises(NonFiniteTrainingError, match="3 optimizer steps in a row"):
        step(wrapper, weight, float("nan"))
    assert wrapper.skipped_steps == 5
    assert MessageHub.get_current_instance().get_scalar("train/skipped_steps").current() == 4


def test_the_mixed_precision_wrapper_skips_alike(monkeypatch):
    # AmpOptimWrapper insists on a GPU; without one its GradScaler disables itself, which leaves
    # the guard as the only thing deciding
    monkeypatch.setattr("mmengine.optim.optimizer.amp_optimizer_wrapper.is_cuda_available", lambda: True)
    weight, wrapper = toy_wrapper(GuardedAmpOptimWrapper, max_consecutive_nonfinite=2)
    step(wrapper, weight, float("nan"))
    assert torch.equal(weight.detach(), torch.ones(3)) and wrapper.skipped_steps == 1
    step(wrapper, weight, 1.0)
    assert not torch.equal(weight.detach(), torch.ones(3))


def test_with_a_host_read_interval_steps_are_skipped_on_the_device_and_counted_at_the_read():
    weight, wrapper = toy_wrapper(fused=True, host_read_interval=4, max_consecutive_nonfinite=3,
                                  clip_grad=dict(max_norm=10.0))
    hub = MessageHub.get_current_instance()
    step(wrapper, weight, 1.0)
    after_good_step = weight.detach().clone()
    state = {k: v.clone() for k, v in wrapper.optimizer.state[weight].items()}
    step(wrapper, weight, float("nan"))
    step(wrapper, weight, float("inf"))
    # skipped on the device (weights, moments and step count untouched); not yet read by the host
    assert torch.equal(weight.detach(), after_good_step)
    for key, value in wrapper.optimizer.state[weight].items():
        assert torch.equal(value, state[key]), key
    assert wrapper.skipped_steps == 0 and "train/grad_norm" not in hub.log_scalars
    step(wrapper, weight, 1.0)  # the 4th step reads all four norms at once
    assert (wrapper.skipped_steps, wrapper.consecutive_nonfinite) == (2, 0)
    assert hub.get_scalar("train/skipped_steps").current() == 2
    assert len(hub.get_scalar("train/grad_norm").data[0]) == 2  # the norms of the two finite steps
    step(wrapper, weight, float("nan"))
    wrapper.state_dict()  # a checkpoint reads what is pending, so its counts are exact
    assert wrapper.skipped_steps == 3
    for _ in range(3):  # the streak reaches 3 on the 2nd of these and stops the run at the next read
        step(wrapper, weight, float("nan"))
    with pytest.raises(NonFiniteTrainingError, match="3 optimizer steps in a row"):
        step(wrapper, weight, float("nan"))


def test_the_device_side_skip_trains_exactly_like_the_host_side_one():
    scales = [1.0, float("nan"), 0.5, float("inf"), float("nan"), 2.0, 1.0, -1.0]
    weights = []
    for interval in (1, 3):
        weight, wrapper = toy_wrapper(fused=True, host_read_interval=interval, clip_grad=dict(max_norm=1.0))
        for scale in scales:
            step(wrapper, weight, scale)
        wrapper.read_device_norms()
        weights.append(weight.detach().clone())
        assert wrapper.skipped_steps == 3
    assert torch.equal(*weights) and not torch.equal(weights[0], torch.ones(3))


def test_a_host_read_interval_needs_a_fused_optimizer():
    with pytest.raises(ValueError, match=r"host_read_interval=50 needs an optimizer that skips a step on the "
                                         r"device: set optim_wrapper.optimizer.fused=True"):
        toy_wrapper(host_read_interval=50)


def test_learning_rates_are_logged_by_group_name():
    groups = [{"params": [torch.nn.Parameter(torch.ones(1))], "name": name, "lr": lr}
              for name, lr in (("adapter", 0.1), ("text_lora", 0.01))]
    optimizer = torch.optim.AdamW(groups, lr=1.0)
    assert GuardedOptimWrapper(optimizer).get_lr() == {"adapter_lr": [0.1], "text_lora_lr": [0.01]}
    # MMEngine's own wrapper logs the first group's rate as lr and optimizer.lr (1.0, which no
    # group trains with) as base_lr
    assert OptimWrapper(optimizer).get_lr() == {"base_lr": [1.0], "lr": [0.1, 0.01]}


@pytest.mark.parametrize("value", [0, -1, 2.5, True])
@pytest.mark.parametrize("name", ["max_consecutive_nonfinite", "host_read_interval"])
def test_the_streak_length_and_read_interval_are_checked(name, value):
    with pytest.raises(ValueError, match=f"optim_wrapper.{name} must be an integer >= 1"):
        toy_wrapper(fused=True, **{name: value})


def test_non_finite_weights_are_never_saved():
    checkpoint = {"meta": {"iter": 8}, "state_dict": {"adapter.w": torch.tensor([1.0, float("nan")])}}
    with pytest.raises(NonFiniteTrainingError, match="iteration 8: weight adapter.w is not finite"):
        FiniteWeightsHook().before_save_checkpoint(None, checkpoint)
    FiniteWeightsHook().before_save_checkpoint(None, {"state_dict": {"w": torch.ones(2)}})


def train(work_dir, options, *extra):
    args = build_parser().parse_args(["wds_train", "lavi_bridge_demo", "--work-dir", str(work_dir),
                                      *extra, "--cfg-options", *options])
    return run(args, wds=True)


def test_a_diverging_run_stops_with_one_line_and_keeps_finite_checkpoints(
        tmp_path, tiny_t5, tiny_sd, demo_shards, monkeypatch, capsys):
    calls = {"n": 0}
    loss = TrainingObjective.loss

    def diverging_loss(*args, **kwargs):
        calls["n"] += 1
        return loss(*args, **kwargs) * (float("nan") if calls["n"] > 5 else 1.0)

    monkeypatch.setattr(TrainingObjective, "loss", staticmethod(diverging_loss))
    options = demo_cfg_options(tiny_t5, tiny_sd, demo_shards, max_iters=12)
    status = main(["wds_train", "lavi_bridge_demo", "--work-dir", str(tmp_path), "--cfg-options",
                   *options, "optim_wrapper.max_consecutive_nonfinite=3"])
    assert status == 1
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith(
        "diffengine: error: training stopped: 3 optimizer steps in a row had a non-finite gradient norm")
    # steps 6 and 7 were skipped, step 8 stopped the run: iteration 6's checkpoint holds step 5's weights
    assert [p.name for p in sorted(tmp_path.glob("iter_*.pth"))] == ["iter_4.pth", "iter_6.pth"]
    for path in tmp_path.glob("iter_*.pth"):
        assert all(torch.isfinite(v).all() for v in torch.load(path, weights_only=True)["state_dict"].values())
    bridge = LaViBridge.from_bridge(tmp_path / "bridge" / "iter_6")
    assert all(torch.isfinite(p).all() for p in bridge.parameters())
    log = next(tmp_path.glob("*/*.log")).read_text()
    assert log.count("optimizer step skipped, weights unchanged") == 3


@pytest.mark.parametrize(("nan_steps", "expected"), [
    ({11, 12}, "WARNING - training ended with its last 2 optimizer steps skipped (non-finite gradient norms): "
               "the final weights and bridge are those from before them (2 steps skipped in this run)"),
    ({6, 7}, "INFO - 2 optimizer steps were skipped in this run (non-finite gradient norms), none of them "
             "at the end"),
])
def test_a_run_with_skipped_steps_says_so_at_the_end(nan_steps, expected, tmp_path, tiny_t5, tiny_sd,
                                                     demo_shards, monkeypatch):
    # a streak shorter than max_consecutive_nonfinite does not stop the run, even at its end
    calls = {"n": 0}
    loss = TrainingObjective.loss

    def loss_with_nans(*args, **kwargs):
        calls["n"] += 1
        return loss(*args, **kwargs) * (float("nan") if calls["n"] in nan_steps else 1.0)

    monkeypatch.setattr(TrainingObjective, "loss", staticmethod(loss_with_nans))
    options = demo_cfg_options(tiny_t5, tiny_sd, demo_shards, max_iters=12, checkpoint_interval=12)
    assert main(["wds_train", "lavi_bridge_demo", "--work-dir", str(tmp_path), "--cfg-options",
                 *options, "optim_wrapper.max_consecutive_nonfinite=3"]) == 0
    log = next(tmp_path.glob("*/*.log")).read_text()
    assert expected in log and log.count("optimizer steps were skipped") + log.count("training ended with") == 1


def test_a_bridge_with_non_finite_weights_is_refused(bridge_dir):
    from safetensors.torch import load_file, save_file

    path = bridge_dir / "adapter" / "diffusion_pytorch_model.safetensors"
    state = load_file(path)
    next(iter(state.values()))[0] = float("nan")
    save_file(state, path)
    with pytest.raises(ValueError, match="diffusion_pytorch_model.safetensors holds non-finite weights"):
        LaViBridge.from_bridge(bridge_dir)


def final_state(runner) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in runner.model.state_dict().items()}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, tiny_t5, tiny_sd, demo_shards):
    """Six iterations, checkpoints at 2, 4 and 6, caption dropout on (its draws must resume too)."""
    options = [*demo_cfg_options(tiny_t5, tiny_sd, demo_shards, max_iters=6), "model.caption_dropout=0.3"]
    work_dir = tmp_path_factory.mktemp("uninterrupted")
    runner = train(work_dir, options)
    return options, final_state(runner), runner.message_hub.get_scalar("train/loss").data[0].copy(), work_dir


@pytest.mark.slow
@pytest.mark.parametrize("iteration, during_save", [(3, False), (4, True)],
                         ids=["after-iteration-3", "while-writing-iteration-4"])
def test_a_killed_and_resumed_run_ends_where_the_uninterrupted_one_does(
        uninterrupted, tmp_path, iteration, during_save):
    options, weights, losses, _ = uninterrupted
    # one kept checkpoint: MMEngine's own hook deletes iter_2.pth before it writes iter_4.pth
    options = [*options, "default_hooks.checkpoint.max_keep_ckpts=1"]
    assert train_killed(tmp_path, options, iteration, during_save) == -9
    # the newest whole checkpoint survives, and a half-written one never has a checkpoint's name
    assert [path.name for path in tmp_path.glob("iter_*.pth")] == ["iter_2.pth"]
    assert Path((tmp_path / "last_checkpoint").read_text()).name == "iter_2.pth"
    assert [path.name for path in tmp_path.glob(".iter_*")] == ([".iter_4.partial.pth"] if during_save else [])
    resumed = train(tmp_path, options, "--resume")
    assert resumed.iter == 6
    assert [path.name for path in tmp_path.glob("*iter_*.pth*")] == ["iter_6.pth"]
    resumed_weights = final_state(resumed)
    assert resumed_weights.keys() == weights.keys()
    for name, value in weights.items():
        torch.testing.assert_close(resumed_weights[name], value, rtol=0, atol=1e-6, msg=name)
    assert resumed.message_hub.get_scalar("train/loss").data[0] == pytest.approx(losses, abs=1e-6)


def test_sigterm_saves_a_checkpoint_from_which_the_run_ends_where_the_uninterrupted_one_does(
        uninterrupted, tmp_path, monkeypatch, capsys):
    options, weights, losses, _ = uninterrupted
    # the stop's checkpoint alone, and no log line before it: its losses are read for it
    options = [*options, "default_hooks.checkpoint.interval=100", "default_hooks.logger.interval=5"]
    handler = signal.getsignal(signal.SIGTERM)
    train_ = DiffEngineRunner.train

    def sigterm_before(iteration: int) -> None:
        monkeypatch.setattr(DiffEngineRunner, "train",
                            lambda self: (self.register_hook(SignalHook(iteration)), train_(self))[1])

    # SIGTERM arrives before iteration 3: that step runs to its end, then the run stops
    sigterm_before(3)
    assert main(["wds_train", "lavi_bridge_demo", "--work-dir", str(tmp_path), "--cfg-options", *options]) == 143
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"diffengine: training stopped by SIGTERM after iteration 3 of 6: saved {tmp_path}/iter_3.pth; "
        "continue with --resume")
    assert signal.getsignal(signal.SIGTERM) == handler  # given back when training ends
    assert [path.name for path in tmp_path.glob("iter_*.pth")] == ["iter_3.pth"]
    assert (tmp_path / "bridge" / "last_bridge").read_text() == "iter_3"
    # resumed, and sent SIGTERM again before its last iteration: it ends as planned, without
    # the final sample grid (a stop must fit the scheduler's grace period)
    sigterm_before(6)
    resumed = train(tmp_path, options, "--resume")
    assert resumed.iter == 6 and (tmp_path / "iter_6.pth").is_file()
    assert sorted(path.name for path in (tmp_path / "samples").glob("*.png")) == ["iter_0.png", "iter_3.png"]
    resumed_weights = final_state(resumed)
    for name, value in weights.items():
        torch.testing.assert_close(resumed_weights[name], value, rtol=0, atol=1e-6, msg=name)
    assert resumed.message_hub.get_scalar("train/loss").data[0] == pytest.approx(losses, abs=1e-6)


def test_resume_applies_new_learning_rates_and_logs_what_changed(uninterrupted, tmp_path):
    options, _, _, work_dir = uninterrupted
    shutil.copy(work_dir / "iter_4.pth", tmp_path)  # a checkpoint copied elsewhere resumes there
    runner = train(tmp_path, [*options, "optim_wrapper.paramwise_cfg.group_lr.adapter=0.0005",
                              "optim_wrapper.optimizer.weight_decay=0.5", "train_cfg.max_iters=5"], "--resume")
    rates = {g["name"]: g["lr"] for g in runner.optim_wrapper.optimizer.param_groups}
    assert rates == {"vision_lora": 2e-3, "text_lora": 2e-4, "adapter": 5e-4}
    assert {g["weight_decay"] for g in runner.optim_wrapper.optimizer.param_groups} == {0.5}
    log = next(tmp_path.glob("*/*.log")).read_text()
    assert "resume: adapter learning rate 0.0005 from this run's config (the checkpoint's run had 0.002)" in log
    assert "resume: train_cfg.max_iters = 5 (the checkpoint's run had 6)" in log
    # the resumed run logs the rate it trains with
    assert runner.message_hub.get_scalar("train/adapter_lr").current() == 5e-4


def test_a_checkpoint_of_another_lora_rank_is_one_line(uninterrupted, tmp_path, capsys, monkeypatch):
    options, _, _, work_dir = uninterrupted
    arguments = ["--cfg-options", *options, "model.vision_lora.rank=3"]
    built, from_cfg = [], DiffEngineRunner.from_cfg

    def counted_from_cfg(cfg):
        built.append(cfg)
        return from_cfg(cfg)

    monkeypatch.setattr(DiffEngineRunner, "from_cfg", counted_from_cfg)
    # the bridge saved with the checkpoint tells, before any model loads
    status = main(["wds_train", "lavi_bridge_demo", "--work-dir", str(tmp_path / "run"), "--resume",
                   str(work_dir / "iter_4.pth"), *arguments])
    assert status == 2 and not built
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith(f"diffengine: error: --resume: {work_dir}/bridge/iter_4/bridge.json was trained with "
                            "vision_lora={'rank': 8, ")
    assert "this model has vision_lora={'rank': 3, " in error and error.endswith("to continue that bridge")
    # a checkpoint without its bridge: the weights themselves tell, once loaded
    (tmp_path / "alone").mkdir()
    shutil.copy(work_dir / "iter_4.pth", tmp_path / "alone")
    status = main(["wds_train", "lavi_bridge_demo", "--work-dir", str(tmp_path / "run"), "--resume",
                   str(tmp_path / "alone" / "iter_4.pth"), *arguments])
    assert status == 2 and built
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("diffengine: error: the checkpoint does not fit this model (")
    assert "tensors differ in shape, e.g. unet." in error and "other LoRA ranks" in error


def test_a_used_work_dir_is_refused_unless_resumed_or_overwritten(uninterrupted, tmp_path, capsys):
    options, _, _, work_dir = uninterrupted
    used = tmp_path / "used"
    shutil.copytree(work_dir, used)
    args = ["wds_train", "lavi_bridge_demo", "--work-dir", str(used), "--cfg-options", *options,
            "train_cfg.max_iters=2"]
    assert main(args) == 2
    assert "holds a previous run (iter_4.pth, iter_6.pth, last_checkpoint, bridge/iter_2): add --resume" in (
        capsys.readouterr().err)
    assert main([*args[:4], "--overwrite", *args[4:]]) == 0
    # the earlier run is gone: its later checkpoints and bridges cannot be mistaken for this run's
    assert sorted(p.name for p in used.glob("iter_*.pth")) == ["iter_2.pth"]
    assert sorted(p.name for p in (used / "bridge").glob("iter_*")) == ["iter_2"]


def test_a_copied_or_renamed_work_dir_resumes_from_its_own_checkpoints(uninterrupted, tmp_path):
    _, _, _, work_dir = uninterrupted
    copy = tmp_path / "copy"
    shutil.copytree(work_dir, copy)
    # MMEngine wrote the original's absolute path
    assert (copy / "last_checkpoint").read_text().strip() == str(work_dir / "iter_6.pth")
    assert find_resume_checkpoint(copy) == copy / "iter_6.pth"
    renamed = copy.rename(tmp_path / "renamed")
    assert find_resume_checkpoint(renamed) == renamed / "iter_6.pth"
    (renamed / "last_checkpoint").write_text("")  # an interrupted write of the pointer
    (renamed / "iter_6.pth").unlink()
    assert find_resume_checkpoint(renamed) == renamed / "iter_4.pth"
    assert find_resume_checkpoint(tmp_path) is None


def test_a_checkpoints_config_is_read_without_running_it(capsys):
    from diffengine.engine.resume import saved_config

    text = "import os\nx = dict(a=1, b=[1, (2, 3)], c=inf, d={'k': -1.5})\ny = print('ran')\nz = 'kept'\n"
    assert saved_config(text) == {"x": {"a": 1, "b": [1, (2, 3)], "c": float("inf"), "d": {"k": -1.5}},
                                  "z": "kept"}
    assert "ran" not in capsys.readouterr().out


def test_resume_follows_a_pointer_to_checkpoints_saved_outside_the_work_dir(tmp_path):
    elsewhere = tmp_path / "bucket" / "run" / "iter_8.pth"
    elsewhere.parent.mkdir(parents=True)
    elsewhere.write_bytes(b"checkpoint")
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "last_checkpoint").write_text(str(elsewhere))
    assert find_resume_checkpoint(tmp_path / "work") == elsewhere


def test_overwrite_deletes_only_what_a_run_wrote(tmp_path):
    from diffengine.tools.train import prepare_work_dir

    (tmp_path / "pretrained" / "my_models").mkdir(parents=True)  # the user's own folder
    (tmp_path / "samples").mkdir()
    (tmp_path / "samples" / "notes.txt").write_text("mine")
    prepare_work_dir(tmp_path, resume=False, overwrite=False)  # nothing of a run here: accepted
    (tmp_path / "bridge" / "iter_5").mkdir(parents=True)
    (tmp_path / "bridge" / "last_bridge").write_text("iter_5")
    (tmp_path / "samples" / "iter_5.png").write_bytes(b"png")
    prepare_work_dir(tmp_path, resume=False, overwrite=True)
    assert not (tmp_path / "bridge" / "iter_5").exists() and not (tmp_path / "samples" / "iter_5.png").exists()
    assert (tmp_path / "pretrained" / "my_models").is_dir() and (tmp_path / "samples" / "notes.txt").is_file()


def test_overwrite_tolerates_outputs_another_node_deleted_first(tmp_path, monkeypatch):
    from diffengine.tools import train

    (tmp_path / "bridge" / "iter_5").mkdir(parents=True)
    (tmp_path / "iter_5.pth").write_bytes(b"checkpoint")
    listed = train.run_outputs(tmp_path)
    assert len(listed) == 2
    # both listed outputs vanish between listing and deleting (another launcher's --overwrite)
    monkeypatch.setattr(train, "run_outputs", lambda work_dir: [*listed, tmp_path / "bridge" / "iter_9"])
    (tmp_path / "iter_5.pth").unlink()
    train.prepare_work_dir(tmp_path, resume=False, overwrite=True)
    assert not (tmp_path / "bridge" / "iter_5").exists()
    train._ignore_vanished(None, "x", (FileNotFoundError, FileNotFoundError("gone"), None))
    # an error other than a vanished file still raises
    with pytest.raises(PermissionError):
        train._ignore_vanished(None, "x", (PermissionError, PermissionError("denied"), None))


@pytest.mark.parametrize("checkpoint_folder, bridge_kept", [(".", True), ("ckpts", True), (".", False)],
                         ids=["beside-its-bridge", "in-another-folder", "its-bridge-pruned"])
def test_resuming_a_bridge_under_settings_that_change_its_weights_meaning_is_refused(
        uninterrupted, tmp_path, checkpoint_folder, bridge_kept):
    options, _, _, work_dir = uninterrupted
    shutil.copytree(work_dir, tmp_path, dirs_exist_ok=True)
    # a checkpoint kept elsewhere (CheckpointHook's out_dir): its bridge is still found in the work dir
    checkpoint = tmp_path / checkpoint_folder / "iter_6.pth"
    checkpoint.parent.mkdir(exist_ok=True)
    (tmp_path / "iter_6.pth").rename(checkpoint)
    if not bridge_kept:  # the bridge hook keeps fewer than the checkpoint hook: the checkpoint's meta tells
        shutil.rmtree(tmp_path / "bridge" / "iter_6")
    with pytest.raises(ConfigError) as error:
        # a bare --resume finds the checkpoint beside its bridge; one kept elsewhere is named
        train(tmp_path, [*options, "train_cfg.max_iters=8", "model.hidden_layer=0"], "--resume",
              *([] if checkpoint_folder == "." else [str(checkpoint)]))
    where = f"{tmp_path}/bridge/iter_6/bridge.json" if bridge_kept else f"checkpoint {checkpoint}"
    assert str(error.value) == (f"--resume: {where} was trained with hidden_layer=-1, "
                                "this model has hidden_layer=0: set model.hidden_layer=-1 to continue that bridge")
    assert not (tmp_path / "iter_8.pth").exists()


def test_a_full_disk_while_saving_ends_the_run_with_the_kept_checkpoint_whole(
        tmp_path, tiny_t5, tiny_sd, demo_shards, monkeypatch):
    from mmengine.fileio import LocalBackend

    put = LocalBackend.put

    def disk_full_at_iteration_4(backend, data, path):
        if "iter_4" in str(path):
            with open(path, "wb") as file:
                file.write(data[:len(data) // 2])
            raise OSError(28, "No space left on device")
        put(backend, data, path)

    monkeypatch.setattr(LocalBackend, "put", disk_full_at_iteration_4)
    options = [*demo_cfg_options(tiny_t5, tiny_sd, demo_shards, max_iters=4),
               "default_hooks.checkpoint.max_keep_ckpts=1",
               # a subfolder in the file names: the partial file goes beside the final one
               "default_hooks.checkpoint.filename_tmpl=ckpts/iter_{}.pth"]
    with pytest.raises(OSError, match="No space left"):
        train(tmp_path, options)
    assert sorted(path.name for path in (tmp_path / "ckpts").iterdir()) == ["iter_2.pth"]
    assert (tmp_path / "last_checkpoint").read_text() == str(tmp_path / "ckpts" / "iter_2.pth")
