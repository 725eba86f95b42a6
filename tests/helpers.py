"""Helpers shared by the tests: demo-config options, fixed batches, test shards, toy runs, hooks."""
import io
import itertools
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
import webdataset as wds
from mmengine.fileio import LocalBackend
from mmengine.hooks import Hook
from mmengine.model import BaseModel
from mmengine.optim import OptimWrapper
from PIL import Image
from torch import nn
from torch.optim import AdamW
from torch.utils.data import DataLoader

from diffengine.datasets import build_wds_dataloader
from diffengine.engine import ParamGroupsOptimWrapperConstructor
from diffengine.engine.runner import DiffEngineRunner

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


class FailOnRankHook(Hook):
    """Raises RuntimeError on global rank ``rank`` after training iteration ``iteration``."""

    def __init__(self, rank: int, iteration: int) -> None:
        self.rank = rank
        self.iteration = iteration

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        if runner.rank == self.rank and runner.iter + 1 == self.iteration:
            raise RuntimeError(f"injected failure on rank {self.rank} at iteration {self.iteration}")


class SignalHook(Hook):
    """Sends SIGTERM before training iteration N to its own process (``to_launcher``: from global
    rank 1 after iteration N, to the process group of the ``diffengine`` launcher above its
    torchrun agent, as SLURM or ``kill -- -PGID`` would: launcher and torchrun both get it)."""

    def __init__(self, iteration: int, to_launcher: bool = False) -> None:
        self.iteration = iteration
        self.to_launcher = to_launcher

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        if not self.to_launcher and runner.iter + 1 == self.iteration:
            os.kill(os.getpid(), signal.SIGTERM)

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        if self.to_launcher and runner.rank == 1 and runner.iter + 1 == self.iteration:
            agent = os.getppid()
            with open(f"/proc/{agent}/stat") as stat:
                launcher = int(stat.read().rsplit(")", 1)[1].split()[1])
            os.killpg(os.getpgid(launcher), signal.SIGTERM)


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
        self.handle = self.adapter.register_forward_hook(lambda _m, _i, out: torch.zeros_like(out))
        return self

    def __exit__(self, *exc):
        self.handle.remove()


class KillHook(Hook):
    """SIGKILLs its own process after training iteration N, or while iteration N's checkpoint is written.

    During a save it strikes after the bridge folder is written (it runs last among the
    ``before_save_checkpoint`` hooks), when half of the checkpoint file's bytes are on disk.
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
            LocalBackend.put = _write_half_and_kill_self


def _write_half_and_kill_self(backend, data: bytes, path) -> None:
    with open(path, "wb") as file:
        file.write(data[:len(data) // 2])
    _kill_self()


def _kill_self() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def train_killed(work_dir, options: list[str], iteration: int, during_save: bool) -> int:
    """Run ``wds_train lavi_bridge_demo`` in a new process that ``KillHook`` kills; returns its exit code."""
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
    return subprocess.run([sys.executable, "-c", script, "--work-dir", str(work_dir), "--cfg-options",
                           *options], capture_output=True, cwd=Path(__file__).parents[1]).returncode


TWO_CAPTIONS = ("a red circle on a white background", "a blue square on a black background")


def fixed_batch(captions: tuple[str, ...] = TWO_CAPTIONS, size: int = 32) -> dict:
    """A model input batch: random pixels in [-1, 1] (always the same) with ``captions``, and the
    original sizes and crop offsets the loader records (SDXL's time ids), distinct per sample."""
    generator = torch.Generator().manual_seed(0)
    count = len(captions)
    return {"pixel_values": torch.rand(count, 3, size, size, generator=generator) * 2 - 1,
            "text": list(captions),
            "original_size": torch.tensor([[3 * size + i, 2 * size - i] for i in range(count)]),
            "crop_top_left": torch.tensor([[i, size // 2 + i] for i in range(count)])}


def seeded_loss(model, batch: dict, seed: int = 7) -> float:
    """Loss with fixed noise and timesteps, so two evaluations are comparable."""
    torch.manual_seed(seed)
    with torch.no_grad():
        return model(batch)["loss"].item()


def train_briefly(model, steps: int = 15, lr: float = 2e-3, batch: dict | None = None) -> tuple[float, float]:
    """``steps`` AdamW updates on ``batch`` (default ``fixed_batch()``); returns the seeded loss before and after."""
    optim = ParamGroupsOptimWrapperConstructor(dict(type=OptimWrapper, optimizer=dict(type=AdamW, lr=lr)), {})(model)
    batch = fixed_batch() if batch is None else batch
    before = seeded_loss(model, batch)
    torch.manual_seed(0)
    for _ in range(steps):
        optim.update_params(model(batch)["loss"])
    return before, seeded_loss(model, batch)


# ---- webdataset shards for the loader tests ----
LOADER_RES = 8  # image size of the loader tests


def image_bytes(fmt: str = "JPEG", mode: str = "RGB", size: tuple[int, int] = (20, 14), seed: int = 0) -> bytes:
    """Encoded random image."""
    rng = np.random.default_rng(seed)
    image = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def sample(key: str, caption: str | None = "a caption", image: bytes | None = b"", ext: str = "jpg",
           meta: dict | None = None) -> dict:
    """A raw webdataset sample; image b"" means a valid JPEG, None means no image file."""
    item = {"__key__": key}
    if image is not None:
        item[ext] = image or image_bytes(seed=len(key))
    if caption is not None:
        item["txt"] = caption
    if meta is not None:
        item["json"] = json.dumps(meta).encode()
    return item


def write_tar(path, samples: list[dict]) -> str:
    with wds.TarWriter(str(path)) as writer:
        for item in samples:
            writer.write(item)
    return str(path)


def good_shards(folder, shards: int, per_shard: int, prefix: str = "s") -> list[str]:
    return [write_tar(folder / f"{prefix}{i}.tar",
                      [sample(f"{prefix}{i}k{j}", f"caption {prefix}{i}k{j}") for j in range(per_shard)])
            for i in range(shards)]


def load(shards, **kwargs) -> DataLoader:
    kwargs = {"batch_size": 1, "resolution": LOADER_RES, "num_workers": 0, "shuffle_buffer": 0, **kwargs}
    return build_wds_dataloader(shards, **kwargs)


def keys_of(loader: DataLoader) -> list[str]:
    return [key for batch in loader for key in batch["data_samples"]["keys"]]


# ---- a toy model and runner for the training-loop tests ----
_toy_run_ids = itertools.count()


class KeyRecorder(BaseModel):
    """Fits one scalar to the mean pixel; records the sample keys of every batch it trains on."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(()))
        self.seen: list[list[str]] = []

    def forward(self, inputs: dict, data_samples: dict | None = None, mode: str = "loss") -> dict:
        self.seen.append(list(data_samples["keys"]))
        return {"loss": (self.weight - inputs["pixel_values"].float().mean()) ** 2}


def train_toy(work_dir, train_dataloader, max_iters: int, resume_from: str | None = None,
              custom_hooks: list | None = None, checkpoint_hook: str = "CheckpointHook") -> DiffEngineRunner:
    """Train KeyRecorder with a checkpoint every iteration; resume from `resume_from` if given."""
    runner = DiffEngineRunner(
        model=KeyRecorder(), work_dir=str(work_dir), train_dataloader=train_dataloader,
        train_cfg=dict(type="StreamingIterBasedTrainLoop", max_iters=max_iters),
        optim_wrapper=dict(optimizer=dict(type="SGD", lr=0.1)),
        default_hooks=dict(checkpoint=dict(type=checkpoint_hook, by_epoch=False, interval=1),
                           logger=dict(type="LoggerHook", interval=1)),
        custom_hooks=custom_hooks, log_processor=dict(by_epoch=False), randomness=dict(seed=0),
        resume=resume_from is not None, load_from=resume_from, default_scope="diffengine",
        # MMEngine keys its global message hub and visualizer on the name
        experiment_name=f"test_loops_{next(_toy_run_ids)}")
    runner.train()
    return runner


class ToyImages(torch.utils.data.Dataset):
    """Eight map-style samples in the wds batch layout; counts item reads."""

    def __init__(self) -> None:
        self.reads = 0

    def __len__(self) -> int:
        return 8

    def __getitem__(self, index: int) -> dict:
        self.reads += 1
        return {"inputs": {"pixel_values": torch.full((3, 2, 2), float(index))},
                "data_samples": {"keys": f"toy{index}"}}


def map_cfg() -> dict:
    return dict(dataset=ToyImages(), batch_size=2, num_workers=0,
                sampler=dict(type="DefaultSampler", shuffle=True), collate_fn=dict(type="default_collate"))


def assert_same_images(actual: np.ndarray, expected: np.ndarray) -> None:
    """Images of a pipeline loaded from disk against the in-memory model's, to float rounding.

    Not bit for bit: a weight loaded from safetensors may sit at an unaligned address, and the
    CPU GEMM then takes another kernel that rounds differently (1e-7 per Linear measured on an
    AMD EPYC). A missing or unapplied LoRA moves pixels by 1e-2 or more.
    """
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-5)


def assert_same_png(path: Path, expected: np.ndarray) -> None:
    """A written PNG against float images in [0, 1]: within one 8-bit step (rounding at .5 may flip)."""
    written = np.asarray(Image.open(path)).astype(np.int16)
    assert np.abs(written - (expected * 255).round().astype(np.int16)).max() <= 1


def renamed_durably(events, source, target, contents=()):
    """``source`` (and every path in ``contents``) reached the disk before it was renamed to
    ``target``, and ``target``'s folder after: a power loss leaves the old name or the whole new one."""
    source, target = os.path.realpath(source), os.path.realpath(target)
    rename = events.index(("replace", source, target))
    before = {event[1] for event in events[:rename] if event[0] == "fsync"}
    after = {event[1] for event in events[rename:] if event[0] == "fsync"}
    return before >= {source, *map(str, contents)} and os.path.dirname(target) in after

