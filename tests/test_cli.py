import os
import re
import subprocess
import sys

import pytest
import torch
from mmengine.config import Config

from diffengine.entry_point import build_parser, main
from diffengine.version import __version__
from tests.helpers import demo_cfg_options


def diffengine(*args, env=None, timeout=600):
    # a session of its own: a signal to its process group does not reach the tests
    return subprocess.run([sys.executable, "-m", "diffengine", *args], capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})}, start_new_session=True)


def test_help_and_listing_do_not_import_torch():
    code = ("import sys; from diffengine.entry_point import build_parser, main; build_parser(); "
            "main(['list-cfg']); print('torch' in sys.modules, 'mmengine' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "False False"


@pytest.mark.parametrize("command", ["train", "wds_train", "demo", "infer", "export",
                                     "convert-official", "prep-wds", "list-cfg", "copy-cfg",
                                     "version"])
def test_every_subcommand_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args([command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: diffengine" in capsys.readouterr().out


def test_version_and_list_cfg(capsys):
    assert main(["version"]) == 0
    assert capsys.readouterr().out.strip() == __version__
    assert main(["list-cfg"]) == 0
    names = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert {"lavi_bridge_v15_laion", "lavi_bridge_demo"} <= set(names)
    for pattern in ("demo", "DEMO"):  # any case
        assert main(["list-cfg", "-p", pattern]) == 0
        assert [line.split()[0] for line in capsys.readouterr().out.splitlines()] == ["lavi_bridge_demo"]
    assert main(["list-cfg", "-p", "no_such"]) == 1
    out, err = capsys.readouterr()
    assert out == "" and err == "diffengine: no packaged config name contains 'no_such' (list-cfg lists them all)\n"


def test_copy_cfg_copies_a_loadable_config(tmp_path):
    assert main(["copy-cfg", "lavi_bridge_v15_laion", str(tmp_path)]) == 0
    copied = tmp_path / "lavi_bridge" / "lavi_bridge_v15_laion.py"
    assert copied.is_file() and (tmp_path / "_base_" / "default_runtime.py").is_file()
    cfg = Config.fromfile(str(copied))
    assert cfg.model.text_encoder == "google-t5/t5-large"
    # a config built on a sibling config copies along with it
    assert main(["copy-cfg", "lavi_bridge_pixart_512_laion", str(tmp_path / "pixart")]) == 0
    cfg = Config.fromfile(str(tmp_path / "pixart" / "lavi_bridge" / "lavi_bridge_pixart_512_laion.py"))
    assert cfg.model.vision_model == "PixArt-alpha/PixArt-XL-2-512x512"


def test_copy_cfg_keeps_edited_files_unless_overwritten(tmp_path, capsys):
    assert main(["copy-cfg", "lavi_bridge_demo", str(tmp_path)]) == 0
    edited = tmp_path / "lavi_bridge" / "lavi_bridge_demo.py"
    edited.write_text(edited.read_text() + "\ntrain_cfg.update(max_iters=7)\n")
    # copying again over unchanged files is fine; over an edited one it is refused
    assert main(["copy-cfg", "lavi_bridge_demo", str(tmp_path)]) == 2
    assert "differ from the packaged ones, e.g. " in capsys.readouterr().err
    assert "max_iters=7" in edited.read_text()
    assert main(["copy-cfg", "lavi_bridge_demo", str(tmp_path), "--overwrite"]) == 0
    assert "max_iters=7" not in edited.read_text()


def test_unknown_config_is_one_line_with_close_matches_and_exit_2():
    result = diffengine("train", "lavi_bridge_v15_lai")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "diffengine: error: unknown config 'lavi_bridge_v15_lai': not a file and not a packaged "
        "config. Did you mean: lavi_bridge_v15_laion, lavi_bridge_llama2_v15_laion, "
        "lavi_bridge_v15_laion_latents?"]
    assert main(["copy-cfg", "nothing_like_it", "/tmp/x"]) == 2


def test_a_missing_config_file_never_falls_back_to_a_packaged_one(tmp_path, capsys):
    assert main(["train", str(tmp_path / "lavi_bridge_v15_laion.py")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_multi_process_launch_checks_the_config_first(tmp_path):
    config = tmp_path / "map_style.py"
    config.write_text("train_dataloader = dict(batch_size=1, dataset=dict(type='X'))\n"
                      "train_cfg = dict(max_iters=1)\n")
    result = diffengine("wds_train", str(config), env={"NPROC_PER_NODE": "2"})
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("diffengine: error: map_style.py: ")


def test_a_workers_input_error_is_one_line_from_the_launcher(tiny_t5, tiny_sd, demo_shards, tmp_path):
    # the launcher reads no model's config.json: a hidden layer the LM lacks is found by the workers
    options = [*demo_cfg_options(tiny_t5, tiny_sd, demo_shards, max_iters=1), "model.hidden_layer=99"]
    result = diffengine("wds_train", "lavi_bridge_demo", "--work-dir", str(tmp_path / "work"),
                        "--cfg-options", *options, env={"NPROC_PER_NODE": "2"})
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("diffengine: error:")]
    assert errors == [result.stderr.strip().splitlines()[-1]] and "hidden_layer=99 is out of range" in errors[0]
    # torchrun still reports its failed children; no worker prints its own traceback
    assert "ConfigError" not in result.stderr and result.stderr.count("Traceback") <= 1


def test_torchrun_runs_one_node_standalone_unless_given_a_rendezvous():
    from diffengine.tools.launch import torchrun_command

    def flags(env):
        command = torchrun_command(["lavi_bridge_demo"], 2, env)
        return command[command.index("--nproc_per_node=2") + 1:command.index("-m", 3)]

    # two jobs on one machine must not meet on a fixed port
    assert flags({}) == flags({"NNODES": "1"}) == flags({"NNODES": "", "MASTER_PORT": " "}) == ["--standalone"]
    assert flags({"MASTER_PORT": "4000"}) == ["--nnodes=1", "--node_rank=0", "--master_addr=127.0.0.1",
                                              "--master_port=4000"]
    assert flags({"NNODES": "2", "NODE_RANK": "1", "MASTER_ADDR": "10.0.0.1"}) == [
        "--nnodes=2", "--node_rank=1", "--master_addr=10.0.0.1", "--master_port=29500"]


def test_an_earlier_hidden_layer_makes_ddp_look_for_unused_parameters():
    from diffengine.tools.train import build_config

    def wrapper(*options):
        args = build_parser().parse_args(["train", "lavi_bridge_demo", "--cfg-options", *options])
        return build_config(args, wds=False).model_wrapper_cfg

    assert not wrapper("model.hidden_layer=-1").get("find_unused_parameters", False)
    assert wrapper("model.hidden_layer=-2").find_unused_parameters is True


def test_wds_train_rejects_a_config_without_a_streaming_loader(tmp_path, capsys):
    config = tmp_path / "map_style.py"
    config.write_text("train_dataloader = dict(batch_size=1, dataset=dict(type='X'))\n"
                      "train_cfg = dict(max_iters=1)\n")
    assert main(["wds_train", str(config)]) == 2
    assert "wds_train needs train_dataloader=dict(type=build_wds_dataloader" in capsys.readouterr().err
    config.write_text("from diffengine.datasets import build_wds_dataloader\n"
                      "train_dataloader = dict(type=build_wds_dataloader, shards='x', batch_size=1, "
                      "resolution=8)\ntrain_cfg = dict(max_epochs=1)\n")
    assert main(["wds_train", str(config)]) == 2
    assert "iteration-based" in capsys.readouterr().err


def test_mixed_precision_without_gpu_is_a_clear_error(tiny_t5, tiny_sd, demo_shards, tmp_path, capsys):
    options = demo_cfg_options(tiny_t5, tiny_sd, demo_shards)
    code = main(["train", "lavi_bridge_demo", "--amp", "--work-dir", str(tmp_path),
                 "--cfg-options", *options])
    assert code == 2 and "--amp trains in mixed precision, which needs a GPU" in capsys.readouterr().err
    # the LAION configs train in mixed precision by default; on a CPU the message says how not to
    code = main(["train", "lavi_bridge_v15_laion", "--work-dir", str(tmp_path), "--cfg-options",
                 f"model.text_encoder={tiny_t5}", f"model.vision_model={tiny_sd}",
                 f"train_dataloader.shards={demo_shards}"])
    err = capsys.readouterr().err
    assert code == 2 and ("lavi_bridge_v15_laion (optim_wrapper.type=GuardedAmpOptimWrapper) trains in mixed "
                          "precision, which needs a GPU") in err
    assert "--cfg-options optim_wrapper.type=GuardedOptimWrapper" in err


@pytest.mark.slow
@pytest.mark.parametrize("command", ["train", "wds_train"])
def test_train_commands_run_and_exit_zero(command, tiny_t5, tiny_sd, demo_shards, tmp_path):
    options = demo_cfg_options(tiny_t5, tiny_sd, demo_shards, max_iters=2, checkpoint_interval=2)
    result = diffengine(command, "lavi_bridge_demo", "--work-dir", str(tmp_path),
                        "--cfg-options", *options, "param_scheduler.0.end=4")
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "iter_2.pth").is_file()
    assert "Iter(train) [2/2]" in result.stdout + result.stderr
    log = next(tmp_path.glob("*/*.log")).read_text()  # the work dir's log has the warning too
    assert "WARNING - param_scheduler.0: ConstantLR ends at iteration 4, after train_cfg.max_iters=2" in log


@pytest.mark.slow
def test_two_cpu_processes_stopped_by_sigterm_and_resumed_read_disjoint_shards_covering_the_epoch(
        tiny_t5, tiny_sd, demo_shards, tmp_path):
    # the packaged demo config, copied, with a hook that records each rank's keys in place of
    # its sampling hooks (they cost time and prove nothing here), and one that sends SIGTERM to
    # the launching command's process group after iteration 2, as a scheduler stopping the job
    # would: torchrun gets it twice (directly, and passed on by the launcher), ends before its
    # workers, and the launcher waits for their report
    assert main(["copy-cfg", "lavi_bridge_demo", str(tmp_path / "cfg")]) == 0
    config = tmp_path / "cfg" / "lavi_bridge" / "lavi_bridge_demo.py"
    config.write_text(config.read_text() + "\nfrom tests.helpers import KeyRecorderHook, SignalHook\n"
                      "custom_hooks = [*custom_hooks[:3], dict(type=KeyRecorderHook), "
                      "dict(type=SignalHook, iteration=2, to_launcher=True)]\n")
    # exact mode, 64 samples per epoch, batch 4, 2 ranks: one epoch is 8 iterations per rank;
    # no checkpoint but the one the stop saves; a loader worker per rank, which torchrun's
    # SIGTERM reaches too (it signals each rank's process group)
    options = [*(option for option in demo_cfg_options(tiny_t5, tiny_sd, demo_shards, max_iters=8,
                                                       checkpoint_interval=100)
                 if not option.startswith("custom_hooks.")), "train_dataloader.num_workers=1"]
    work_dir = tmp_path / "work"
    result = diffengine("wds_train", str(config), "--work-dir", str(work_dir), "--cfg-options", *options,
                        env={"NPROC_PER_NODE": "2"})  # standalone: torchrun picks the port
    # the signal reaches the workers through torchrun while they train on: they agree to stop
    # after the same later iteration
    last = result.stderr.strip().splitlines()[-1]
    stopped = re.fullmatch(r"diffengine: training stopped by SIGTERM after iteration (\d) of 8: "
                           rf"saved {work_dir}/iter_(\d).pth; continue with --resume", last)
    assert result.returncode == 143 and stopped, result.stderr[-3000:]
    iteration = int(stopped[1])
    assert 3 <= iteration < 8 and stopped[2] == stopped[1]
    assert [path.name for path in work_dir.glob("iter_*.pth")] == [f"iter_{iteration}.pth"]
    assert (work_dir / "bridge" / f"iter_{iteration}").is_dir()
    # rank 0 wrote the checkpoint with both ranks' stream positions (4 samples a batch)
    streams = torch.load(work_dir / f"iter_{iteration}.pth", weights_only=True)["meta"]["data_stream"]
    assert [state["positions"] for state in streams] == [[4 * iteration], [4 * iteration]]
    # resumed mid-epoch (past the SignalHook's iteration): each rank trains exactly its remaining
    # batches, so over both runs the ranks read disjoint halves of the epoch
    result = diffengine("wds_train", str(config), "--work-dir", str(work_dir), "--resume",
                        "--cfg-options", *options, env={"NPROC_PER_NODE": "2"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "fast-forwarded without decoding" in result.stdout + result.stderr
    keys = [(work_dir / f"keys_rank{rank}.txt").read_text().split() for rank in (0, 1)]
    assert len(keys[0]) == len(keys[1]) == 32
    assert not set(keys[0]) & set(keys[1])
    assert set(keys[0]) | set(keys[1]) == {f"{index:06d}" for index in range(64)}


def test_tensorboard_backend_is_added_when_installed(monkeypatch):
    import importlib.util

    from diffengine.tools.train import build_config

    args = build_parser().parse_args(["train", "lavi_bridge_demo"])
    find_spec = importlib.util.find_spec

    def names(cfg):
        return [getattr(b["type"], "__name__", b["type"]) for b in cfg.visualizer.vis_backends]

    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "tensorboard" else find_spec(name, *a))
    assert names(build_config(args, wds=False)) == ["LocalVisBackend"]
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: object() if name == "tensorboard" else find_spec(name, *a))
    cfg = build_config(args, wds=False)
    assert names(cfg) == ["LocalVisBackend", "TensorboardVisBackend"]
    assert "TensorboardVisBackend" in cfg.pretty_text  # the Runner logs it; a class object broke this
    from mmengine.registry import VISBACKENDS
    with VISBACKENDS.switch_scope_and_registry("diffengine") as registry:
        assert registry.get(cfg.visualizer.vis_backends[-1]["type"]).__name__ == "TensorboardVisBackend"


@pytest.mark.parametrize("fails", [False, True])
def test_worker_entry_destroys_its_process_group(fails, monkeypatch, tmp_path):
    # a gloo group left alive at interpreter exit aborts the worker after a successful run
    import torch.distributed as dist

    from diffengine.tools import train

    def run(args, wds):
        dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0,
                                world_size=1)
        if fails:
            raise RuntimeError("training failed")

    monkeypatch.setattr(train, "run", run)
    if fails:
        with pytest.raises(RuntimeError, match="training failed"):
            train.main(["lavi_bridge_demo", "--launcher", "pytorch"])
    else:
        train.main(["lavi_bridge_demo", "--launcher", "pytorch"])
    assert not dist.is_initialized()


def test_demo_keeps_an_earlier_run_unless_overwritten(tmp_path, capsys):
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "iter_250.pth").write_bytes(b"an earlier demo's checkpoint")
    assert main(["demo", "--data-dir", str(tmp_path / "data"), "--work-dir", str(tmp_path / "work")]) == 2
    assert capsys.readouterr().err.strip() == (f"diffengine: error: {tmp_path / 'work'} holds an earlier demo run: "
                                               "add --overwrite to replace it, or choose another --work-dir")
    assert not (tmp_path / "data").exists()  # refused before building anything


@pytest.mark.parametrize(("option", "message"), [
    ("model.hidden_layr=2", "model.hidden_layr: LaViBridge has no option 'hidden_layr' (did you mean 'hidden_layer'?)"),
    ("train_cfg.max_iters=0", "train_cfg.max_iters"),
])
def test_demo_checks_its_cfg_options_before_building_assets(tmp_path, capsys, option, message):
    assert main(["demo", "--data-dir", str(tmp_path / "data"), "--work-dir", str(tmp_path / "work"),
                 "--cfg-options", option]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "data").exists()  # refused before building anything
