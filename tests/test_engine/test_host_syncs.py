"""A training iteration reads nothing from the device to the host except where it logs or saves.

On a GPU every tensor read on the host (``.item()``, ``float(t)``, ``if t:``, ``.tolist()``) waits
for all queued work, and the GPU idles while the host queues the next step. On the CPU nothing
waits, but the reads are the same calls: the test counts them, per iteration.
"""
import pytest
import torch
from mmengine.hooks import Hook

from diffengine.engine import DiffEngineRunner
from diffengine.entry_point import build_parser
from diffengine.tools.train import run
from tests.helpers import demo_cfg_options

HOST_READS = ("item", "tolist", "numpy", "__bool__", "__float__", "__int__")


class HostReadCounterHook(Hook):
    """Counts host reads of tensors from the start of each iteration's step to the end of its hooks."""

    priority = "LOWEST"  # before_train_iter: the last hook before the step

    def __init__(self) -> None:
        self.active = False
        self.counts: list[int] = []
        self.reads: list[str] = []

    def before_train_iter(self, runner, batch_idx, data_batch=None) -> None:
        self.active = True
        self.counts.append(0)

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        self.active = False

    def patch(self, monkeypatch) -> None:
        for name in HOST_READS:
            original = getattr(torch.Tensor, name)

            def counted(tensor, *args, _original=original, _name=name, **kwargs):
                if self.active:
                    self.counts[-1] += 1
                    self.reads.append(_name)
                return _original(tensor, *args, **kwargs)

            monkeypatch.setattr(torch.Tensor, name, counted)


@pytest.mark.slow
@pytest.mark.parametrize(("vision", "model_options"), [
    ("tiny_sd", []),
    # flow matching, Flux's packing and guidance, and a weighted scheme (its weights are tensors too)
    ("tiny_flux", ["model.adapter=None", "model.flow_matching.weighting_scheme=cosmap"]),
    ("tiny_sd3", ["model.adapter=None"])])
def test_a_training_step_reads_the_device_only_at_log_and_checkpoint_iterations(
        tmp_path, tiny_t5, demo_shards, monkeypatch, request, vision, model_options):
    tiny_sd = request.getfixturevalue(vision)
    counter = HostReadCounterHook()
    counter.patch(monkeypatch)
    train = DiffEngineRunner.train
    monkeypatch.setattr(DiffEngineRunner, "train", lambda self: (self.register_hook(counter), train(self))[1])
    options = [*demo_cfg_options(tiny_t5, tiny_sd, demo_shards, max_iters=8, checkpoint_interval=100),
               "default_hooks.logger.interval=4", "custom_hooks=[]", "model.caption_dropout=0.0",
               "optim_wrapper.optimizer.fused=True", "optim_wrapper.host_read_interval=50", *model_options]
    args = build_parser().parse_args(["wds_train", "lavi_bridge_demo", "--work-dir", str(tmp_path),
                                      "--cfg-options", *options])
    runner = run(args, wds=True)
    assert runner.iter == 8
    # iterations 4 and 8 log (8 also ends the run and saves): they read losses and gradient norms
    silent = [count for i, count in enumerate(counter.counts, start=1) if i % 4]
    assert silent == [0] * 6, counter.reads
    assert all(counter.counts[i - 1] > 0 for i in (4, 8))
    assert runner.message_hub.get_scalar("train/loss").data[0].size == 8
