import json
import shutil

import pytest
import torch

from diffengine.engine import DiffEngineRunner, load_local_checkpoint
from diffengine.entry_point import build_parser
from diffengine.errors import UnreadableCheckpointError
from diffengine.tools.train import prepare_config, run
from tests.helpers import demo_cfg_options


def train(work_dir, options, *extra):
    args = build_parser().parse_args(
        ["wds_train", "lavi_bridge_demo", "--work-dir", str(work_dir), *extra,
         "--cfg-options", *options])
    return run(args, wds=True)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_t5, tiny_sd, demo_shards):
    """Four iterations with checkpoints at 2 and 4."""
    work_dir = tmp_path_factory.mktemp("work")
    runner = train(work_dir, demo_cfg_options(tiny_t5, tiny_sd, demo_shards))
    return work_dir, runner


def test_training_writes_checkpoints_samples_and_bridges(trained):
    work_dir, runner = trained
    assert runner.iter == 4
    assert (work_dir / "iter_2.pth").is_file() and (work_dir / "iter_4.pth").is_file()
    assert {p.name for p in (work_dir / "samples").glob("*.png")} >= {"iter_0.png", "iter_4.png"}
    bridge = work_dir / "bridge" / "iter_4"
    assert json.loads((bridge / "bridge.json").read_text())["iteration"] == 4
    assert (bridge / "vision_lora" / "adapter_model.safetensors").is_file()
    assert (work_dir / "bridge" / "last_bridge").read_text() == "iter_4"
    checkpoint = torch.load(work_dir / "iter_4.pth", weights_only=False)
    model = runner.model
    assert set(checkpoint["state_dict"]) == {n for n, p in model.named_parameters() if p.requires_grad}
    # lean: the optimizer holds state for the bridge weights only
    assert len(checkpoint["optimizer"]["state"]) == len(checkpoint["state_dict"])


def test_mmengine_checkpoints_load_weights_only(trained):
    work_dir, _ = trained
    checkpoint = load_local_checkpoint(str(work_dir / "iter_2.pth"))
    assert checkpoint["meta"]["iter"] == 2


class Payload:
    def __reduce__(self):
        return (print, ("arbitrary code ran",))


def test_untrusted_pickles_are_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {}, "payload": Payload()}, path)
    with pytest.raises(UnreadableCheckpointError, match=r"evil\.pth was refused as unsafe.*GLOBAL print"):
        load_local_checkpoint(str(path))
    with pytest.raises(FileNotFoundError):
        load_local_checkpoint(str(tmp_path / "missing.pth"))


def test_resume_restores_iteration_and_optimizer(trained, tmp_path, tiny_t5, tiny_sd, demo_shards):
    work_dir, _ = trained
    saved = torch.load(work_dir / "iter_2.pth", weights_only=False)
    args = build_parser().parse_args(
        ["wds_train", "lavi_bridge_demo", "--work-dir", str(tmp_path), "--resume", str(work_dir / "iter_2.pth"),
         "--cfg-options", *demo_cfg_options(tiny_t5, tiny_sd, demo_shards, max_iters=3)])
    cfg, _ = prepare_config(args, wds=True)
    # past the command's check (which refuses a resume with nothing left to train): resume, then
    # stop without a step, so that the state is the restored one
    cfg.train_cfg.max_iters = 2
    runner = DiffEngineRunner.from_cfg(cfg)
    runner.train()
    assert runner.iter == 2
    restored = runner.optim_wrapper.state_dict()
    assert restored["param_groups"] == saved["optimizer"]["param_groups"]
    for index, state in saved["optimizer"]["state"].items():
        for key, value in state.items():
            assert torch.equal(restored["state"][index][key], value)
    for name, value in saved["state_dict"].items():
        assert torch.equal(runner.model.state_dict()[name], value)
    assert runner.param_schedulers[0].last_step == saved["param_schedulers"][0]["last_step"]


def test_resume_auto_continues_to_max_iters(trained, tmp_path, tiny_t5, tiny_sd, demo_shards):
    work_dir, _ = trained
    # a copy: the module's work dir stays as the other tests expect it
    copy = shutil.copytree(work_dir, tmp_path / "work")
    runner = train(copy, demo_cfg_options(tiny_t5, tiny_sd, demo_shards, max_iters=6), "--resume")
    assert runner.iter == 6
    assert (copy / "iter_6.pth").is_file() and (copy / "bridge" / "last_bridge").read_text() == "iter_6"
    assert not (work_dir / "iter_6.pth").exists()
