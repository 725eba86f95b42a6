"""Hooks write what they promise (runner stand-ins: the hooks only touch these attributes)."""
import json
from types import SimpleNamespace

import numpy as np
import pytest
from mmengine.logging import MessageHub
from PIL import Image

from diffengine.engine import BridgeCheckpointHook, ShapesBenchHook, ThroughputHook, VisualizationHook
from diffengine.errors import NonFiniteImagesError


class RecordingVisualizer:
    def __init__(self):
        self.images = []

    def add_image(self, name, image, step):
        self.images.append((name, image.shape, step))


def fake_runner(model, work_dir, iteration=0, world_size=1):
    return SimpleNamespace(model=model, work_dir=str(work_dir), iter=iteration,
                           world_size=world_size, visualizer=RecordingVisualizer(),
                           message_hub=MessageHub.get_instance("test_hooks"),
                           train_loop=SimpleNamespace(stopped_by=0))


def test_bridge_checkpoint_hook_keeps_the_last_k_atomically(tiny_bridge, tmp_path):
    hook = BridgeCheckpointHook(max_keep=2)
    runner = fake_runner(tiny_bridge, tmp_path)
    for iteration in (10, 20, 30):
        hook.before_save_checkpoint(runner, {"meta": {"iter": iteration}})
    root = tmp_path / "bridge"
    assert sorted(p.name for p in root.iterdir()) == ["iter_20", "iter_30", "last_bridge"]
    assert (root / "last_bridge").read_text() == "iter_30"  # a name: work dirs can move
    assert json.loads((root / "iter_30" / "bridge.json").read_text())["iteration"] == 30
    with pytest.raises(ValueError, match="max_keep"):
        BridgeCheckpointHook(max_keep=0)


def test_a_bridge_samples_at_the_resolution_it_was_trained_at(tiny_bridge, tmp_path):
    # tiny SD's native size is 32 px; a bridge trained at 16 px samples at 16 px unless told otherwise
    from mmengine.config import Config

    from diffengine.models import LaViBridge
    from diffengine.models.editors.lavi_bridge.pipeline import LaViBridgePipeline

    assert tiny_bridge.infer("a red circle", num_inference_steps=1)[0].size == (32, 32)
    hook = BridgeCheckpointHook()
    runner = fake_runner(tiny_bridge, tmp_path)
    runner.cfg = Config(dict(train_dataloader=dict(resolution=16)))
    hook.before_train(runner)
    hook.before_save_checkpoint(runner, {"meta": {"iter": 5}})
    folder = tmp_path / "bridge" / "iter_5"
    assert json.loads((folder / "bridge.json").read_text())["resolution"] == 16
    loaded = LaViBridge.from_bridge(folder)
    assert loaded.trained_resolution == 16
    assert loaded.infer("a red circle", num_inference_steps=1)[0].size == (16, 16)
    assert loaded.infer("a red circle", num_inference_steps=1, height=32, width=24)[0].size == (24, 32)
    LaViBridgePipeline.from_model(loaded).save_pretrained(tmp_path / "export")
    exported = LaViBridgePipeline.from_pretrained(tmp_path / "export")
    assert exported.config.resolution == 16
    assert exported("a red circle", num_inference_steps=1, output_type="np").images.shape[1:3] == (16, 16)
    # training it further from a loader without a resolution keeps the one it knows
    runner.model, runner.cfg = loaded, Config(dict(train_dataloader=dict(batch_size=2)))
    hook.before_train(runner)
    again = loaded.save_bridge(tmp_path / "again", iteration=6)
    assert json.loads((again / "bridge.json").read_text())["resolution"] == 16


def test_visualization_hook_renders_before_training_every_n_and_at_the_end(tiny_bridge, tmp_path):
    hook = VisualizationHook(["a red circle", "a blue square"], interval=2, num_inference_steps=2,
                             height=32, width=32)
    runner = fake_runner(tiny_bridge, tmp_path)
    hook.before_train(runner)
    for iteration in range(4):
        runner.iter = iteration
        hook.after_train_iter(runner, iteration)
    runner.iter = 4
    hook.after_train(runner)  # iteration 4 was just rendered: not again
    samples = tmp_path / "samples"
    assert sorted(p.name for p in samples.iterdir()) == ["iter_0.png", "iter_2.png", "iter_4.png"]
    assert Image.open(samples / "iter_2.png").size == (64, 32)  # one 32 px image per prompt
    assert runner.visualizer.images == [("samples", (32, 64, 3), step) for step in (0, 2, 4)]
    # a run stopping on SIGTERM leaves its sample grids to the resumed run: the stop must be quick
    runner.train_loop.stopped_by, runner.iter = 15, 5
    hook.after_train_iter(runner, 5)
    hook.after_train(runner)
    assert len(runner.visualizer.images) == 3
    with pytest.raises(ValueError, match="at least one prompt"):
        VisualizationHook([])


def test_throughput_hook_counts_the_global_batch(monkeypatch):
    clock = iter([10.0, 10.5, 11.0])
    monkeypatch.setattr("diffengine.engine.hooks.throughput_hook.time.perf_counter",
                        lambda: next(clock))
    hook = ThroughputHook()
    runner = fake_runner(None, "/unused", world_size=2)
    batch = {"inputs": {"text": ["a", "b", "c", "d"]}}
    hook.before_train(runner)
    for index in range(3):
        hook.after_train_iter(runner, index, batch)
    history = runner.message_hub.get_scalar("train/samples_per_s").data[0]
    np.testing.assert_allclose(history, [16.0, 16.0])  # 4 samples x 2 ranks / 0.5 s


def test_sampling_hooks_skip_non_finite_images_with_a_warning(tiny_bridge, tmp_path, monkeypatch):
    # a diverged bridge: the optimizer's guard, not a sample grid, decides whether training goes on
    def non_finite(*args, **kwargs):
        raise NonFiniteImagesError("the model generated non-finite pixels in 2 of 2 image(s)")

    monkeypatch.setattr(tiny_bridge, "infer", non_finite)
    warnings = []
    runner = fake_runner(tiny_bridge, tmp_path)
    runner.logger = SimpleNamespace(warning=warnings.append)
    VisualizationHook(["a red circle", "a blue square"], num_inference_steps=2).before_train(runner)
    ShapesBenchHook(num_inference_steps=2).before_train(runner)
    assert not (tmp_path / "samples").exists() and not runner.visualizer.images
    assert warnings == ["sample grid of iteration 0 not written: the model generated non-finite pixels in 2 of 2 "
                        "image(s)", "ShapesBench at iteration 0 skipped: the model generated non-finite pixels in "
                        "2 of 2 image(s)"]


@pytest.mark.parametrize("failing", ["VisualizationHook", "ShapesBenchHook"])
def test_sampling_that_fails_at_a_checkpoint_iteration_loses_no_checkpoint(failing, tiny_t5, tiny_sd, demo_shards,
                                                                            tmp_path, monkeypatch):
    # out of memory while sampling at iteration 2, also a checkpoint iteration: the checkpoint and
    # the bridge of iteration 2 are written first
    from diffengine.engine.hooks import shapesbench_hook, visualization_hook
    from diffengine.entry_point import build_parser
    from diffengine.tools.train import run
    from tests.helpers import demo_cfg_options

    hook_class = {"VisualizationHook": visualization_hook.VisualizationHook,
                  "ShapesBenchHook": shapesbench_hook.ShapesBenchHook}[failing]
    sample = hook_class._render if failing == "VisualizationHook" else hook_class._score

    def out_of_memory_after_training_began(self, runner, step):
        if step > 0:
            raise RuntimeError("CUDA out of memory (simulated)")
        return sample(self, runner, step)

    monkeypatch.setattr(hook_class, sample.__name__, out_of_memory_after_training_began)
    args = build_parser().parse_args([
        "wds_train", "lavi_bridge_demo", "--work-dir", str(tmp_path), "--cfg-options",
        *demo_cfg_options(tiny_t5, tiny_sd, demo_shards, max_iters=4, checkpoint_interval=2),
        "custom_hooks.3.interval=2", "custom_hooks.4.interval=2", "custom_hooks.4.images_per_prompt=1"])
    with pytest.raises(RuntimeError, match="out of memory"):
        run(args, wds=True)
    assert (tmp_path / "iter_2.pth").is_file() and (tmp_path / "bridge" / "iter_2" / "bridge.json").is_file()
    assert not (tmp_path / "iter_3.pth").exists()  # the run stopped there
