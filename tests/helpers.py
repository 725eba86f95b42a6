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
        "custom_hooks.4.num_inference_steps=2", "custom_hooks.5.num_inference_steps=2",
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
