"""Shared helpers for end-to-end tests: the demo config pointed at session-scoped tiny assets."""
import itertools

from mmengine.hooks import Hook

_run_ids = itertools.count()


def demo_cfg_options(tiny_t5: str, tiny_sd: str, shards: str, max_iters: int = 4,
                     checkpoint_interval: int = 2) -> list[str]:
    """--cfg-options that run the packaged demo config for a few iterations on test assets."""
    return [
        f"model.text_encoder={tiny_t5}", f"model.vision_model={tiny_sd}",
        f"train_dataloader.shards={shards}", "train_dataloader.num_samples_per_epoch=64",
        "train_dataloader.num_workers=0", "train_dataloader.batch_size=4",
        f"train_cfg.max_iters={max_iters}",
        f"default_hooks.checkpoint.interval={checkpoint_interval}",
        "default_hooks.logger.interval=1",
        # the demo's sample grid and ShapesBench scores, in 2 denoising steps
        "custom_hooks.3.num_inference_steps=2", "custom_hooks.4.num_inference_steps=2",
        # a unique name per run: MMEngine keys its global visualizer/message hub on it
        f"experiment_name=test_run_{next(_run_ids)}",
    ]


class KeyRecorderHook(Hook):
    """Appends the sample keys of every trained batch to WORK_DIR/keys_rank{RANK}.txt."""

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        with open(f"{runner.work_dir}/keys_rank{runner.rank}.txt", "a") as file:
            file.writelines(f"{key}\n" for key in data_batch["data_samples"]["keys"])


def free_port() -> int:
    """A TCP port free on this machine now (fixed ports collide with runs still closing)."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class adapter_output_zeroed:
    """Context manager: the bridge's adapter outputs zeros, cutting the text out of the images."""

    def __init__(self, bridge):
        self.adapter = bridge.adapter

    def __enter__(self):
        import torch

        self.handle = self.adapter.register_forward_hook(lambda _m, _i, out: torch.zeros_like(out))
        return self

    def __exit__(self, *exc):
        self.handle.remove()


class KillHook(Hook):
    """SIGKILLs its own process after training iteration N, or while iteration N is being saved.

    During a save it strikes after the bridge folder is written and before MMEngine writes the
    checkpoint file (it runs last among the ``before_save_checkpoint`` hooks).
    """

    priority = "LOWEST"

    def __init__(self, iteration: int, during_save: bool = False) -> None:
        self.iteration = iteration
        self.during_save = during_save

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        if not self.during_save and runner.iter + 1 == self.iteration:
            _kill_self()

    def before_save_checkpoint(self, runner, checkpoint):
        if self.during_save and checkpoint["meta"]["iter"] == self.iteration:
            _kill_self()


def _kill_self() -> None:
    import os
    import signal

    os.kill(os.getpid(), signal.SIGKILL)


def train_killed(work_dir, options: list[str], iteration: int, during_save: bool) -> int:
    """Run ``wds_train lavi_bridge_demo`` in a new process that ``KillHook`` kills; returns its exit code."""
    import subprocess
    import sys

    script = (
        "import sys\n"
        "from diffengine.engine.runner import DiffEngineRunner\n"
        "from diffengine.tools.train import run, train_arguments\n"
        "from tests.helpers import KillHook\n"
        "train = DiffEngineRunner.train\n"
        f"DiffEngineRunner.train = lambda self: (self.register_hook(KillHook({iteration}, {during_save})), "
        "train(self))[1]\n"
        "run(train_arguments('lavi_bridge_demo', *sys.argv[1:]), wds=True)\n"
    )
    from pathlib import Path

    return subprocess.run([sys.executable, "-c", script, "--work-dir", str(work_dir), "--cfg-options",
                           *options], capture_output=True, cwd=Path(__file__).parents[1]).returncode
