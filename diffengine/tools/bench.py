"""``diffengine bench``: training speed, measured; a table on screen and every figure in JSON.

Three modes; nothing is downloaded (the demo's tiny models, or real architectures with random
weights):

- ``cpu``: seconds per iteration of diffengine's real training iteration (MMEngine runner and
  train loop with the demo config's hooks, ``GuardedOptimWrapper``, data preprocessor, the
  model's ``train_step``) against a plain PyTorch loop written like the paper's train script, on
  the same tiny demo models, batch, optimizer, learning rates and LoRA, interleaved in paired
  rounds in one process; and the time from the start of ``diffengine wds_train lavi_bridge_demo``
  to the end of its first iteration, in a subprocess.
- ``flops``: training FLOPs per sample by part (VAE encoder forward, LM forward + backward,
  adapter, denoiser forward + backward), counted with ``FlopCounterMode`` on the meta device.
- ``gpu``: samples/s, peak memory and MFU of the paper's loop (fp32, batch 1) and of diffengine's
  fast defaults (bf16 frozen weights + bf16 autocast), from pixels and from precomputed latents,
  at batch 1, 16 and the largest that fits.

Heavy libraries are imported inside the functions: the CLI imports this module for ``--help``.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .arguments import positive_int

if TYPE_CHECKING:
    import torch
    from torch.utils.data import DataLoader

    from diffengine.models import LaViBridge

# the configs whose model settings (sequence length, LoRA, learning rates) each size trains with
CONFIG_BY_SIZE = {"tiny": "lavi_bridge_demo", "full": "lavi_bridge_v15_laion"}
# dense bf16 peak FLOP/s by a substring of torch.cuda.get_device_name(), first match wins
PEAK_FLOPS = (("H100 PCIe", 756e12), ("H100", 989e12), ("H200", 989e12), ("A100", 312e12))
REPEATED_BATCH_LOADER = "bench_repeated_batch_loader"  # its name in diffengine's FUNCTIONS registry
RATIO_GOAL = 1.05  # issue 12: diffengine's time per iteration at most 5 % above the plain loop's
CAPTION = "a photo of a cat wearing a red hat"


def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    """The modes of ``bench`` and their options (argparse only: keeps ``--help`` fast)."""
    modes = parser.add_subparsers(dest="mode", required=True, metavar="MODE")

    def mode(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = modes.add_parser(name, help=help_text, description=help_text)
        sub.add_argument("--work-dir", default="work_dirs/bench", help="where the JSON goes by default")
        sub.add_argument("--out", help="JSON file of every figure (default: WORK_DIR/bench_MODE.json)")
        sub.add_argument("--data-dir", default="data/demo",
                         help="the demo's assets (tiny models, shards), built here once as `diffengine demo` does")
        return sub

    cpu = mode("cpu", "diffengine's training iteration vs a plain PyTorch loop on the demo's models, "
               "and the time to the first iteration of `diffengine wds_train`")
    cpu.add_argument("--rounds", type=positive_int, default=12, help="paired rounds")
    cpu.add_argument("--iters-per-round", type=positive_int, default=5,
                     help="iterations of each side per round")
    cpu.add_argument("--warmup", type=positive_int, default=3, help="untimed iterations of each side first")
    cpu.add_argument("--batch-size", type=positive_int, default=None,
                     help="default: the demo config's (32)")
    cpu.add_argument("--no-startup", action="store_true",
                     help="skip the time-to-first-iteration measurement (a `diffengine wds_train` subprocess)")

    flops = mode("flops", "training FLOPs per sample by part, counted on the meta device")
    flops.add_argument("--size", choices=sorted(CONFIG_BY_SIZE), default="full",
                       help="full: T5-Large + SD1.5 UNet + SD VAE; tiny: the demo's models")
    flops.add_argument("--resolution", type=positive_int, help="px (default: 512 full, 32 tiny)")

    gpu = mode("gpu", "samples/s, peak memory and MFU of the paper's loop and diffengine's fast defaults")
    gpu.add_argument("--size", choices=sorted(CONFIG_BY_SIZE), default="full",
                     help="full: T5-Large + SD1.5 UNet + SD VAE (random weights); tiny: the demo's models "
                     "(a CPU check of this mode: --size tiny --device cpu)")
    gpu.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    gpu.add_argument("--resolution", type=positive_int, help="px (default: 512 full, 32 tiny)")
    gpu.add_argument("--batch-sizes", nargs="+", default=["1", "16", "max"], metavar="N|max",
                     help="batch sizes of the fast rows; max: the largest that fits (doubling, then bisection)")
    gpu.add_argument("--inputs", nargs="+", choices=["pixels", "latents"], default=["pixels", "latents"],
                     help="pixels (the VAE encodes every step) and/or precomputed latent parameters")
    gpu.add_argument("--no-paper", action="store_true", help="skip the paper's loop (fp32, batch 1)")
    gpu.add_argument("--gradient-checkpointing", action="store_true", help="for the fast rows")
    gpu.add_argument("--iters", type=positive_int, default=10, help="timed steps per row")
    gpu.add_argument("--warmup", type=positive_int, default=3, help="untimed steps per row first")
    gpu.add_argument("--max-batch", type=positive_int, default=1024, help="upper bound of the max search")
    gpu.add_argument("--peak-tflops", type=float, default=None,
                     help="the device's peak TFLOP/s for MFU (default: dense bf16 by GPU name: "
                     + ", ".join(f"{name} {peak / 1e12:.0f}" for name, peak in PEAK_FLOPS) + ")")


def run_bench(args: argparse.Namespace, command: list[str]) -> int:
    """Run one mode, print its table and write its JSON (recording ``command``); returns the exit code."""
    import os

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    started, load_before = time.perf_counter(), os.getloadavg()
    figures = {"cpu": run_cpu, "flops": run_flops, "gpu": run_gpu}[args.mode](args)
    report = {"mode": args.mode, "command": command,
              "date": datetime.now(UTC).isoformat(timespec="seconds"), "machine": machine_info(),
              # other work on the machine slows both sides of a comparison, unevenly
              "load_average_1_5_15_min": {"start": load_before, "end": os.getloadavg()},
              "wall_s": round(time.perf_counter() - started, 1), **figures}
    out = Path(args.out or Path(args.work_dir) / f"bench_{args.mode}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"load average (1 min) at start / end: {load_before[0]:.2f} / {os.getloadavg()[0]:.2f} "
          f"on {os.cpu_count()} CPUs; figures written to {out}")
    return 0


# ---------------------------------------------------------------- models and settings


def full_size_configs() -> dict[str, Any]:
    """Configs of the full-size architectures: T5-Large, the SD1.5 UNet, the SD VAE and scheduler."""
    from transformers import T5Config

    return {
        "text": T5Config(d_model=1024, d_ff=4096, d_kv=64, num_heads=16, num_layers=24, vocab_size=32128),
        "unet": {"cross_attention_dim": 768},  # every other UNet2DConditionModel default is SD1.5's
        "vae": {"block_out_channels": (128, 256, 512, 512), "latent_channels": 4, "layers_per_block": 2,
                "down_block_types": ("DownEncoderBlock2D",) * 4, "up_block_types": ("UpDecoderBlock2D",) * 4,
                "sample_size": 512},
        "scheduler": {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
                      "num_train_timesteps": 1000},
    }


def make_full_size_assets(root: Path) -> tuple[Path, Path]:
    """Random-weight T5-Large encoder (with a tiny tokenizer) and an SD1.5-shaped base-model folder."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import T5EncoderModel

    from .demo_assets import make_tiny_t5

    configs = full_size_configs()
    t5_dir = make_tiny_t5(root / "t5")  # for its tokenizer; the model is replaced below
    T5EncoderModel(configs["text"]).save_pretrained(t5_dir)
    sd_dir = root / "sd"
    UNet2DConditionModel(**configs["unet"]).save_pretrained(sd_dir / "unet")
    AutoencoderKL(**configs["vae"]).save_pretrained(sd_dir / "vae")
    DDPMScheduler(**configs["scheduler"]).save_pretrained(sd_dir / "scheduler")
    return t5_dir, sd_dir


def demo_models(data_dir: str | Path) -> tuple[Path, Path, Path]:
    """The demo's assets (built once, as ``diffengine demo`` does): T5 folder, stage-1 folder, shards."""
    from .demo_assets import make_demo_assets

    with contextlib.redirect_stderr(io.StringIO()):  # its progress bar
        data = make_demo_assets(data_dir, progress=False).resolve()
    return data / "t5", data / "stage1", data / "shards"


def packaged_config(size: str, *options: str):
    """The packaged config a size trains with, with ``--cfg-options``-style overrides applied."""
    from .train import build_config, train_arguments

    with tempfile.TemporaryDirectory() as work_dir:
        return build_config(train_arguments(CONFIG_BY_SIZE[size], "--work-dir", work_dir,
                                            *(["--cfg-options", *options] if options else [])), wds=True)


def _model_kwargs(cfg) -> dict[str, Any]:
    return {key: value for key, value in cfg.model.items() if key != "type"}


def _optimizer_settings(cfg) -> tuple[dict, dict[str, float], float]:
    """(AdamW keyword arguments, learning rate by group, clip max norm) of a config's optim_wrapper."""
    wrapper = cfg.optim_wrapper
    optimizer = {key: value for key, value in wrapper.optimizer.items() if key != "type"}
    group_lr = dict(wrapper.get("paramwise_cfg", {}).get("group_lr", {}))
    return optimizer, group_lr, wrapper.clip_grad["max_norm"]


class PlainLoop:
    """The paper's training step written directly in PyTorch, diffusers, transformers and peft.

    T5 encoder + LoRA -> adapter MLP -> SD UNet + LoRA, frozen VAE: encode, noise, forward, MSE
    loss, backward, clip, AdamW step with one learning rate per part, constant schedule. Only the
    setup borrows from diffengine: the list of LoRA target layers (the paper's rule) and the
    adapter's module class (the paper's MLP). It reproduces ``LaViBridge.forward`` draw for draw
    (VAE sample, noise, timesteps, caption dropout), so one step from the same weights and random
    state gives the same update; the tests check that.
    """

    def __init__(self, text_encoder: str | Path, vision_model: str | Path, model_kwargs: dict,
                 optimizer: dict, group_lr: dict[str, float], max_norm: float,
                 device: str | torch.device = "cpu", weight_dtype: torch.dtype | None = None):
        import torch
        from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
        from peft import LoraConfig, inject_adapter_in_model
        from transformers import AutoTokenizer, T5EncoderModel

        from diffengine.models.editors.lavi_bridge.text_adapter import LaViBridgeTextAdapter
        from diffengine.models.language import LANGUAGE_FAMILIES
        from diffengine.models.lora import lora_target_names
        from diffengine.models.vision import VISION_FAMILIES

        unsupported = {key: model_kwargs[key] for key in ("hidden_layer", "text_attention_mask", "snr_gamma",
                                                          "prediction_type", "pad_token")
                       if model_kwargs.get(key) not in (None, -1, False)}
        if unsupported:
            raise ValueError(f"the plain loop is the paper's T5 + UNet step; it does not do {unsupported}")
        self.device = torch.device(device)
        self.weight_dtype = weight_dtype or torch.float32
        self.max_length = model_kwargs.get("max_length", 77)
        self.caption_dropout = model_kwargs.get("caption_dropout", 0.0)
        self.max_norm = max_norm
        self.tokenizer = AutoTokenizer.from_pretrained(text_encoder)
        self.text_encoder = T5EncoderModel.from_pretrained(text_encoder, dtype=self.weight_dtype)
        self.unet = UNet2DConditionModel.from_pretrained(vision_model, subfolder="unet",
                                                         torch_dtype=self.weight_dtype)
        self.vae = AutoencoderKL.from_pretrained(vision_model, subfolder="vae", torch_dtype=self.weight_dtype)
        self.scheduler = DDPMScheduler.from_pretrained(vision_model, subfolder="scheduler")
        for frozen in (self.text_encoder, self.unet, self.vae):
            frozen.requires_grad_(False)
        hidden, context = self.text_encoder.config.d_model, self.unet.config.cross_attention_dim
        dims = {"in_dim": hidden, "out_dim": context, "int_dim": (hidden + context) // 2,
                **(model_kwargs.get("adapter") or {})}
        self.adapter = LaViBridgeTextAdapter(**dims)
        for model, classes, side in ((self.text_encoder, LANGUAGE_FAMILIES["t5"].lora_target_classes, "text_lora"),
                                     (self.unet, VISION_FAMILIES["sd_unet"].lora_target_classes, "vision_lora")):
            lora = {"rank": 32, "alpha": None, "dropout": 0.1, **(model_kwargs.get(side) or {})}
            inject_adapter_in_model(LoraConfig(r=lora["rank"], lora_alpha=lora["alpha"] or lora["rank"],
                                               lora_dropout=lora["dropout"],
                                               target_modules=lora_target_names(model, classes)), model)
        for model in (self.text_encoder, self.unet, self.vae, self.adapter):
            model.to(self.device).train()
        self.groups = {"vision_lora": [p for p in self.unet.parameters() if p.requires_grad],
                       "text_lora": [p for p in self.text_encoder.parameters() if p.requires_grad],
                       "adapter": list(self.adapter.parameters())}
        for params in self.groups.values():  # LoRA trains in float32 on low-precision frozen weights
            for param in params:
                param.data = param.data.float()
        self.params = [p for params in self.groups.values() for p in params]
        self.optimizer = torch.optim.AdamW(
            [{"params": params, "lr": group_lr.get(name, optimizer.get("lr"))} for name, params in self.groups.items()],
            **optimizer)
        self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda _: 1.0)  # "constant"

    def copy_trainable_from(self, model: LaViBridge) -> None:
        """Start from ``model``'s LoRA and adapter weights (the same names on both sides)."""
        import torch

        pairs = ((self.text_encoder, model.language.model), (self.unet, model.denoiser), (self.adapter, model.adapter))
        with torch.no_grad():
            for mine, theirs in pairs:
                source = {name: p for name, p in theirs.named_parameters() if p.requires_grad}
                target = {name: p for name, p in mine.named_parameters() if p.requires_grad}
                if source.keys() != target.keys():
                    raise ValueError(f"{type(mine).__name__}: the plain loop's trainable weights differ from "
                                     f"diffengine's ({len(target)} vs {len(source)} tensors)")
                for name, param in target.items():
                    param.copy_(source[name])

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """LoRA and adapter weights by group-qualified name."""
        return {f"{part}.{name}": p.detach().clone() for part, model in
                (("text", self.text_encoder), ("unet", self.unet), ("adapter", self.adapter))
                for name, p in model.named_parameters() if p.requires_grad}

    def step(self, inputs: dict) -> None:
        """One training step on a batch ``{"pixel_values": uint8 (B,3,H,W), "text": [str]}``."""
        import torch
        import torch.nn.functional as F

        pixels = inputs["pixel_values"].to(self.device).float().div_(127.5).sub_(1.0)
        with torch.no_grad():
            # contiguous: randn_like follows the memory layout, which CPU convolutions may make channels-last
            latents = (self.vae.encode(pixels.to(self.weight_dtype)).latent_dist.sample().float()
                       * self.vae.config.scaling_factor).contiguous()
        noise = torch.randn_like(latents)
        timesteps = torch.randint(0, self.scheduler.config.num_train_timesteps, (latents.shape[0],),
                                  device=self.device)
        noisy = self.scheduler.add_noise(latents, noise, timesteps)
        target = (self.scheduler.get_velocity(latents, noise, timesteps)
                  if self.scheduler.config.prediction_type == "v_prediction" else noise)
        texts = list(inputs["text"])
        if self.caption_dropout:
            keep = (torch.rand(len(texts)) >= self.caption_dropout).tolist()
            texts = [text if kept else "" for text, kept in zip(texts, keep, strict=True)]
        input_ids = self.tokenizer(texts, padding="max_length", max_length=self.max_length, truncation=True,
                                   padding_side="right", return_tensors="pt").input_ids.to(self.device)
        hidden = self.text_encoder(input_ids=input_ids).last_hidden_state
        context = self.adapter(hidden.float()).to(self.weight_dtype)
        pred = self.unet(noisy.to(self.weight_dtype), timesteps, encoder_hidden_states=context).sample
        loss = F.mse_loss(pred.float(), target.float(), reduction="mean")
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, self.max_norm)
        self.optimizer.step()
        self.lr_scheduler.step()
        self.optimizer.zero_grad()


# ---------------------------------------------------------------- CPU mode


class _RepeatedBatch:
    """One batch, ``length`` times: a sized stream with ``set_epoch``, as the training loop expects."""

    def __init__(self, batch: dict, length: int) -> None:
        self.batch = batch
        self.length = length

    def __len__(self) -> int:
        return self.length

    def set_epoch(self, epoch: int) -> None:
        """Every epoch is the same batch."""

    def __iter__(self) -> Iterator[dict]:
        for _ in range(self.length):
            yield self.batch


def repeated_batch_loader(source: dict, length: int) -> DataLoader:
    """A DataLoader yielding the first batch of the loader config ``source`` ``length`` times, from memory.

    The batch is the one the real loader delivers (same layout, same bytes); serving it from
    memory keeps image decoding (docs/loader_benchmark.md) out of a comparison of per-step
    framework overhead, where it would cost both sides alike.
    """
    from torch.utils.data import DataLoader, IterableDataset

    from diffengine.registry import FUNCTIONS

    batch = next(iter(FUNCTIONS.build(dict(source))))
    # an IterableDataset made here: this module must import without torch
    dataset = type("RepeatedBatch", (_RepeatedBatch, IterableDataset), {})(batch, length)
    loader = DataLoader(dataset, batch_size=None)
    loader.sampler.set_epoch = dataset.set_epoch  # as build_wds_dataloader: MMEngine's epoch propagation
    return loader


class PairedRounds:
    """Runs the plain loop between rounds of the runner's own iterations, and times both (hook methods).

    The runner trains ``warmup + rounds * per_round`` iterations; after the warm-up, round ``i``
    is ``per_round`` iterations of each side, diffengine first in even rounds and the plain loop
    first in odd ones. A diffengine round is timed from the end of the previous segment to the
    end of its last ``after_train_iter`` (this hook runs last): loop, data, every hook, the step.
    """

    priority = "LOWEST"

    def __init__(self, plain_step: Callable[[dict], None], warmup: int, rounds: int, per_round: int) -> None:
        self.plain_step = plain_step
        self.lengths = {-1: warmup}
        self.per_round = per_round
        self.segments = [("diffengine", -1), ("plain", -1)]
        for index in range(rounds):
            order = ("diffengine", "plain") if index % 2 == 0 else ("plain", "diffengine")
            self.segments += [(side, index) for side in order]
        self.seconds: dict[str, dict[int, float]] = {"diffengine": {}, "plain": {}}
        self._position = 0
        self._count = 0
        self._mark = 0.0
        self._inputs: dict | None = None
        self._reported = 0

    def _length(self, index: int) -> int:
        return self.lengths.get(index, self.per_round)

    def before_train(self, runner) -> None:
        """Start the warm-up's clock."""
        self._mark = time.perf_counter()

    def after_train_iter(self, runner, batch_idx: int, data_batch: dict | None = None, outputs=None) -> None:
        """At the end of a diffengine segment: record it, run the plain segments that follow it."""
        if self._inputs is None:
            self._inputs = data_batch["inputs"]
        self._count += 1
        side, index = self.segments[self._position]
        if self._count < self._length(index):
            return
        self.seconds[side][index] = time.perf_counter() - self._mark
        self._position, self._count = self._position + 1, 0
        while self._position < len(self.segments) and self.segments[self._position][0] == "plain":
            _, index = self.segments[self._position]
            start = time.perf_counter()
            for _ in range(self._length(index)):
                self.plain_step(self._inputs)
            self.seconds["plain"][index] = time.perf_counter() - start
            self._position += 1
        self._report_finished_rounds()
        self._mark = time.perf_counter()  # after the progress line: it is in neither side's time

    def _report_finished_rounds(self) -> None:
        finished = [index for index in self.seconds["plain"] if index in self.seconds["diffengine"] and index >= 0]
        for index in finished[self._reported:]:
            diffengine, plain = (self.seconds[side][index] / self.per_round for side in ("diffengine", "plain"))
            print(f"  round {index + 1}: diffengine {diffengine:.4f} s/iter, plain {plain:.4f} s/iter, "
                  f"ratio {diffengine / plain:.3f}", flush=True)
        self._reported = len(finished)

    def rounds(self) -> list[dict[str, Any]]:
        """Seconds per iteration of each side and their ratio, per round (warm-up excluded)."""
        if self._position != len(self.segments):
            raise RuntimeError(f"the run ended after {self._position} of {len(self.segments)} segments")
        return [{"first": self.segments[2 + 2 * index][0],
                 "diffengine_s": self.seconds["diffengine"][index] / self.per_round,
                 "plain_s": self.seconds["plain"][index] / self.per_round,
                 "ratio": self.seconds["diffengine"][index] / self.seconds["plain"][index]}
                for index in range(len(self.seconds["plain"]) - 1)]


def paired_rounds_hook(plain_step: Callable[[dict], None], warmup: int, rounds: int, per_round: int):
    """A ``PairedRounds`` that is an MMEngine ``Hook`` (built here: this module must import without MMEngine)."""
    from mmengine.hooks import Hook

    return type("PairedRoundsHook", (PairedRounds, Hook), {})(plain_step, warmup, rounds, per_round)


def median_interval(values: list[float], confidence: float = 0.95) -> tuple[float, float] | None:
    """Distribution-free interval for the median: order statistics ``(x_(j), x_(n+1-j))``.

    It covers the median with probability ``1 - 2 P(Binomial(n, 1/2) < j)``; the narrowest one
    reaching ``confidence``, or None when ``n`` is too small (fewer than 6 values for 95 %).
    """
    values, n = sorted(values), len(values)
    best = None
    for j in range(1, n // 2 + 1):
        if 1 - 2 * sum(math.comb(n, i) for i in range(j)) / 2 ** n < confidence:
            break
        best = j
    return None if best is None else (values[best - 1], values[n - best])


def _summary(values: list[float]) -> dict[str, Any]:
    interval = median_interval(values)
    return {"median": statistics.median(values), "ci95_of_median": list(interval) if interval else None,
            "min": min(values), "max": max(values)}


def build_cpu_runner(t5_dir: Path, sd_dir: Path, shards: Path, work_dir: str, max_iters: int,
                     batch_size: int | None = None):
    """The demo config's runner on the demo's models, fed the real loader's first batch from memory.

    Dropped from the demo config: its sample-grid and ShapesBench hooks and checkpoints (they run
    every 125 iterations and at the ends, not per iteration). The console log is WARNING, so the
    config dump and the log line every 50 iterations are not printed (LoggerHook still builds it).
    """
    from diffengine.engine import DiffEngineRunner, ShapesBenchHook, VisualizationHook
    from diffengine.registry import FUNCTIONS

    cfg = packaged_config("tiny", f"model.text_encoder={t5_dir}", f"model.vision_model={sd_dir}",
                          f"train_dataloader.shards={shards}/{{00000..00001}}.tar",
                          *([f"train_dataloader.batch_size={batch_size}"] if batch_size else []),
                          f"train_cfg.max_iters={max_iters}", "default_hooks.checkpoint.save_last=False",
                          f"default_hooks.checkpoint.interval={max_iters + 1}")
    cfg.work_dir = work_dir
    cfg.custom_hooks = [hook for hook in cfg.custom_hooks if hook["type"] not in (VisualizationHook, ShapesBenchHook)]
    # by registry name: MMEngine cannot print a config holding a function added after loading
    FUNCTIONS.register_module(name=REPEATED_BATCH_LOADER, module=repeated_batch_loader, force=True)
    cfg.train_dataloader = dict(type=f"diffengine.{REPEATED_BATCH_LOADER}", source=cfg.train_dataloader,
                                length=max_iters)
    cfg.log_level = "WARNING"
    # MMEngine keys its global message hub and visualizer on the name
    cfg.experiment_name = f"bench_{time.time_ns()}"
    return DiffEngineRunner.from_cfg(cfg), cfg


def run_cpu(args: argparse.Namespace) -> dict[str, Any]:
    """diffengine vs the plain loop in paired rounds, then the time to the first iteration."""
    t5_dir, sd_dir, shards = demo_models(args.data_dir)
    max_iters = args.warmup + args.rounds * args.iters_per_round
    with tempfile.TemporaryDirectory() as work_dir:
        runner, cfg = build_cpu_runner(t5_dir, sd_dir, shards, work_dir, max_iters, args.batch_size)
        plain = PlainLoop(t5_dir, sd_dir, _model_kwargs(cfg), *_optimizer_settings(cfg))
        plain.copy_trainable_from(runner.model)
        hook = paired_rounds_hook(plain.step, args.warmup, args.rounds, args.iters_per_round)
        runner.register_hook(hook, hook.priority)
        runner.train()
    rounds = hook.rounds()
    batch_size = cfg.train_dataloader["source"]["batch_size"]
    result = {
        "models": {"text_encoder": str(t5_dir), "vision_model": str(sd_dir), "config": CONFIG_BY_SIZE["tiny"]},
        "batch_size": batch_size, "resolution": cfg.train_dataloader["source"]["resolution"],
        "rounds": args.rounds, "iters_per_round": args.iters_per_round, "warmup": args.warmup,
        "data": "in memory: the real loader's first batch, served by a DataLoader through the real train loop "
                "(decoding, the same for both sides, is measured in docs/loader_benchmark.md)",
        "diffengine_side": "DiffEngineRunner.train() with the demo config's StreamingIterBasedTrainLoop, its "
                           "hooks but the sample-grid, ShapesBench and checkpoint ones, GuardedOptimWrapper, "
                           "DiffusionDataPreprocessor and LaViBridge.train_step",
        "plain_side": "PlainLoop: T5 + peft LoRA -> adapter -> UNet + peft LoRA, VAE, MSE, backward, "
                      "clip_grad_norm_, AdamW, constant LambdaLR",
        "diffengine_s_per_iter": _summary([r["diffengine_s"] for r in rounds]),
        "plain_s_per_iter": _summary([r["plain_s"] for r in rounds]),
        "ratio": {**_summary([r["ratio"] for r in rounds]), "goal": RATIO_GOAL},
        "per_round": rounds,
    }
    if not args.no_startup:
        result["startup"] = time_to_first_iteration(t5_dir, sd_dir, shards, Path(args.work_dir))
    print_cpu(result)
    return {"cpu": result}


# log lines of `diffengine wds_train` that mark its progress, first occurrence each
STARTUP_MARKS = {"config_logged_s": re.compile(r"mmengine - INFO - Config:"),
                 "runner_built_s": re.compile(r"Hooks will be executed"),
                 "first_iteration_s": re.compile(r"Iter\(train\) \[\s*1/")}


def time_to_first_iteration(t5_dir: Path, sd_dir: Path, shards: Path, work_dir: Path) -> dict[str, Any]:
    """Seconds from starting ``python -m diffengine wds_train lavi_bridge_demo`` to its first iteration's end.

    Read off its console log as the lines arrive: the LoggerHook line of iteration 1 (logged
    right after that iteration). The demo config runs as shipped, except that its sample grid
    and ShapesBench scoring before iteration 1 are left out (evaluation, not startup), training
    stops after one iteration and logs every iteration.
    """
    import os

    from diffengine.entry_point import main as cli_main

    root = work_dir / "startup"
    with contextlib.redirect_stdout(io.StringIO()):
        cli_main(["copy-cfg", CONFIG_BY_SIZE["tiny"], str(root / "configs"), "--overwrite"])
    config = next((root / "configs").rglob(f"{CONFIG_BY_SIZE['tiny']}.py"))
    config.write_text(config.read_text() + "\n# diffengine bench: startup only, no evaluation before iteration 1\n"
                      "custom_hooks = [hook for hook in custom_hooks\n"
                      "                if hook['type'] not in (VisualizationHook, ShapesBenchHook)]\n")
    command = [sys.executable, "-m", "diffengine", "wds_train", str(config), "--work-dir", str(root / "run"),
               "--overwrite", "--cfg-options", f"model.text_encoder={t5_dir}", f"model.vision_model={sd_dir}",
               f"train_dataloader.shards={shards}/{{00000..00001}}.tar", "train_cfg.max_iters=1",
               "default_hooks.logger.interval=1"]
    marks: dict[str, float] = {}
    lines: list[str] = []
    start = time.perf_counter()
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"}) as process:
        for line in process.stdout:
            now = time.perf_counter() - start
            lines.append(line)
            for name, pattern in STARTUP_MARKS.items():
                if name not in marks and pattern.search(line):
                    marks[name] = round(now, 2)
        returncode = process.wait()
    if returncode != 0 or "first_iteration_s" not in marks:
        raise RuntimeError(f"{' '.join(command)} exited {returncode} without logging iteration 1:\n"
                           + "".join(lines[-20:]))
    return {"command": command, **marks,
            "note": "from process start; config_logged: imports and config check done, runner starting; "
                    "runner_built: model loaded; first_iteration: iteration 1 trained and logged"}


def print_cpu(result: dict[str, Any]) -> None:
    """The CPU mode's table."""
    ratio, de, plain = result["ratio"], result["diffengine_s_per_iter"], result["plain_s_per_iter"]

    def interval(summary: dict) -> str:
        ci = summary["ci95_of_median"]
        return f"{ci[0]:.3f}-{ci[1]:.3f}" if ci else "n/a"

    print(f"\ndiffengine bench cpu: demo models, batch {result['batch_size']} at {result['resolution']} px, "
          f"{result['rounds']} paired rounds of {result['iters_per_round']} iterations each side")
    print("| side | s/iter median | 95 % CI of median | min | max |\n|---|---|---|---|---|")
    for name, summary in (("diffengine", de), ("plain PyTorch loop", plain)):
        print(f"| {name} | {summary['median']:.4f} | {interval(summary)} | {summary['min']:.4f} | "
              f"{summary['max']:.4f} |")
    print(f"| ratio diffengine / plain | {ratio['median']:.3f} | {interval(ratio)} | {ratio['min']:.3f} | "
          f"{ratio['max']:.3f} |")
    print(f"goal: ratio <= {RATIO_GOAL} ({'met' if ratio['median'] <= RATIO_GOAL else 'not met'} by the median)")
    if "startup" in result:
        startup = result["startup"]
        print(f"time to the first iteration of `diffengine wds_train lavi_bridge_demo`: "
              f"{startup['first_iteration_s']:.1f} s (config logged at {startup.get('config_logged_s', 'n/a')} s, "
              f"runner built at {startup.get('runner_built_s', 'n/a')} s)")


# ---------------------------------------------------------------- FLOPs


def _architecture(size: str, data_dir: str | Path) -> dict[str, Any]:
    """The configs of a size's text encoder, UNet, VAE and scheduler (tiny: read from the demo's folders)."""
    if size == "full":
        return full_size_configs()
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import AutoConfig

    t5_dir, sd_dir, _ = demo_models(data_dir)
    return {"text": AutoConfig.from_pretrained(t5_dir),
            "unet": dict(UNet2DConditionModel.load_config(sd_dir, subfolder="unet")),
            "vae": dict(AutoencoderKL.load_config(sd_dir, subfolder="vae")),
            "scheduler": dict(DDPMScheduler.load_config(sd_dir, subfolder="scheduler"))}


def count_training_flops(architecture: dict[str, Any], model_kwargs: dict, resolution: int,
                         batch_size: int = 1) -> dict[str, float]:
    """FLOPs of one training step, per part and in total, counted with ``FlopCounterMode`` on the meta device.

    Matmul, convolution and attention, 2 FLOPs per multiply-add. Each part's forward and backward
    is counted on its own (FlopCounterMode attributes backward FLOPs to the wrong modules), with
    the gradients the real step computes (LoRA weights, and the inputs of parts whose upstream
    trains); ``step_counted`` is the whole step in one pass, to check that the parts add up.
    On real CPU tensors SDPA's default kernel is not counted; on the meta device it is.
    """
    import torch
    import torch.nn.functional as F
    import transformers
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from torch.utils.flop_counter import FlopCounterMode

    from diffengine.models.editors.lavi_bridge.text_adapter import LaViBridgeTextAdapter
    from diffengine.models.language import language_family_of, lm_hidden_states
    from diffengine.models.lora import inject_lora
    from diffengine.models.vision import SizeConditioning, TextConditioning, vision_family_of

    text_config = architecture["text"]
    family = language_family_of(text_config.model_type)
    with torch.device("meta"):
        language = (transformers.AutoModel.from_config(text_config) if family.model_class is None
                    else getattr(transformers, family.model_class)(text_config))
        unet = UNet2DConditionModel.from_config(architecture["unet"])
        vae = AutoencoderKL.from_config(architecture["vae"])
        # SD or SDXL, from the UNet's config as a bridge finds it
        vision = vision_family_of(type(unet).__name__, unet.config)
        hidden = getattr(text_config, "hidden_size", None) or text_config.d_model
        context_dim = unet.config.cross_attention_dim
        pooled_dim = vision.pooled_dim(unet.config)
        adapter = LaViBridgeTextAdapter(**{"in_dim": hidden, "out_dim": context_dim,
                                           "int_dim": (hidden + context_dim) // 2, "pooled_dim": pooled_dim,
                                           **(model_kwargs.get("adapter") or {})})
    for model in (language, unet, vae):
        model.requires_grad_(False)
    for model, classes, side in ((language, family.lora_target_classes, "text_lora"),
                                 (unet, vision.lora_target_classes, "vision_lora")):
        lora = {"rank": 32, "alpha": None, "dropout": 0.1, **(model_kwargs.get(side) or {})}
        if lora["rank"]:
            inject_lora(model, classes, lora["rank"], lora["alpha"], lora["dropout"])
    for model in (language, unet, vae, adapter):
        model.train()

    meta = {"device": "meta"}
    length = model_kwargs.get("max_length", 77)
    ids = torch.zeros(batch_size, length, dtype=torch.long, **meta)
    mask = torch.ones(batch_size, length, dtype=torch.long, **meta)
    pixels = torch.empty(batch_size, 3, resolution, resolution, **meta)
    side = resolution // 2 ** (len(vae.config.block_out_channels) - 1)
    latents = torch.empty(batch_size, unet.config.in_channels, side, side, **meta)
    timesteps = torch.zeros(batch_size, dtype=torch.long, **meta)
    # SDXL's time ids: an image of the trained size, uncropped (the other families ignore them)
    size_ids = torch.zeros(batch_size, 2, dtype=torch.long, **meta)
    sizes = SizeConditioning(size_ids, size_ids, size_ids)
    lm_args = (model_kwargs.get("hidden_layer", -1), model_kwargs.get("text_attention_mask", False))

    def lm() -> torch.Tensor:
        return lm_hidden_states(language, ids, mask, *lm_args)

    def adapt(hidden_states: torch.Tensor) -> TextConditioning:
        return adapter.conditioning(hidden_states, mask, hidden_states.dtype)

    def denoise(text: TextConditioning) -> torch.Tensor:
        prediction = vision.predict(unet, latents, timesteps, text, sizes)
        return F.mse_loss(prediction.float(), latents.float())

    def adapter_loss() -> torch.Tensor:
        text = adapt(upstream((batch_size, length, hidden)))
        return text.context.sum() + (0 if text.pooled is None else text.pooled.sum())

    def denoiser_loss() -> torch.Tensor:
        pooled = None if pooled_dim is None else upstream((batch_size, pooled_dim))
        return denoise(TextConditioning(upstream((batch_size, length, context_dim)), mask, pooled))

    def encode() -> None:
        with torch.no_grad():
            vae.encode(pixels).latent_dist.sample()

    def step() -> None:
        encode()
        denoise(adapt(lm())).backward()

    def counted(function: Callable[[], Any]) -> float:
        with FlopCounterMode(display=False) as counter:
            function()
        return counter.get_total_flops() / batch_size

    def upstream(shape: tuple[int, ...]) -> torch.Tensor:  # an input whose gradient the step computes
        return torch.empty(*shape, requires_grad=True, **meta)

    parts = {
        "vae_encoder_forward": counted(encode),
        "lm_forward_backward": counted(lambda: lm().sum().backward()),
        "adapter_forward_backward": counted(lambda: adapter_loss().backward()),
        "denoiser_forward_backward": counted(lambda: denoiser_loss().backward()),
    }
    return {**parts, "step_total": sum(parts.values()), "step_counted": counted(step),
            "step_total_from_latents": sum(parts.values()) - parts["vae_encoder_forward"]}


# issue 12's table for T5-Large + SD1.5 UNet at 512 px, GFLOP per sample
ISSUE_FLOPS_GFLOP = {"vae_encoder_forward": 1117, "lm_forward_backward": 97, "adapter_forward_backward": 10,
                     "denoiser_forward_backward": 1836, "step_total": 3060}


def run_flops(args: argparse.Namespace) -> dict[str, Any]:
    """Count the training FLOPs per sample of a size and print them by part."""
    resolution = args.resolution or (512 if args.size == "full" else 32)
    flops = _flops_for(args.size, args.data_dir, resolution)
    print(f"\ndiffengine bench flops: {args.size} size at {resolution} px, per sample "
          "(FlopCounterMode on the meta device; matmul, conv, attention; 2 FLOPs per multiply-add)")
    compare = args.size == "full" and resolution == 512
    print("| part | GFLOP | share |" + (" issue 12 |" if compare else "")
          + "\n|---|---|---|" + ("---|" if compare else ""))
    for name, value in flops["per_sample"].items():
        if name in ("step_counted", "step_total_from_latents"):
            continue
        issue = f" {ISSUE_FLOPS_GFLOP[name]} |" if compare else ""
        print(f"| {name} | {value / 1e9:.4g} | {100 * value / flops['per_sample']['step_total']:.1f} % |{issue}")
    per_sample = flops["per_sample"]
    print(f"whole step counted in one pass: {per_sample['step_counted'] / 1e9:.4g} GFLOP "
          f"(parts add up to {per_sample['step_total'] / 1e9:.4g}); from precomputed latents: "
          f"{per_sample['step_total_from_latents'] / 1e9:.4g}")
    if compare:
        flops["issue_12_gflop"] = ISSUE_FLOPS_GFLOP
    return {"flops": flops}


def _flops_for(size: str, data_dir: str | Path, resolution: int) -> dict[str, Any]:
    cfg = packaged_config(size)
    per_sample = count_training_flops(_architecture(size, data_dir), _model_kwargs(cfg), resolution)
    return {"size": size, "config": CONFIG_BY_SIZE[size], "resolution": resolution, "per_sample": per_sample,
            "counted_with": "torch.utils.flop_counter.FlopCounterMode on the meta device, batch 1"}


# ---------------------------------------------------------------- GPU mode


def find_largest_batch(fits: Callable[[int], bool], limit: int) -> int:
    """The largest batch size in [1, limit] that ``fits``, by doubling then bisection (0 if none).

    ``fits`` must be monotone: a batch that fits means every smaller one fits.
    """
    if not fits(1):
        return 0
    low, high = 1, None
    while high is None:
        if low >= limit:
            return low
        candidate = min(2 * low, limit)
        if fits(candidate):
            low = candidate
        else:
            high = candidate
    while high - low > 1:
        middle = (low + high) // 2
        if fits(middle):
            low = middle
        else:
            high = middle
    return low


def memory_probe(try_batch: Callable[[int], None], free: Callable[[], None]) -> Callable[[int], bool]:
    """``fits(batch_size)``: whether ``try_batch`` runs without ``torch.cuda.OutOfMemoryError``.

    ``free`` runs after each try, whatever its outcome.
    """
    import torch

    def fits(batch_size: int) -> bool:
        try:
            try_batch(batch_size)
            fitted = True
        except torch.cuda.OutOfMemoryError:
            fitted = False
        # here, after the except block: the traceback and the tensors its frames hold are released
        free()
        return fitted

    return fits


def peak_flops(device: torch.device, override_tflops: float | None) -> tuple[float | None, str]:
    """The device's peak FLOP/s for MFU and where it came from."""
    import torch

    if override_tflops is not None:
        return override_tflops * 1e12, "--peak-tflops"
    if device.type != "cuda":
        return None, "unknown for this device (give --peak-tflops)"
    name = torch.cuda.get_device_name(device)
    for key, value in PEAK_FLOPS:
        if key in name:
            return value, f"dense bf16 peak of {key}"
    return None, f"unknown for {name} (give --peak-tflops)"


def _batch(kind: str, batch_size: int, resolution: int, latent_shape: tuple[int, int]) -> dict:
    """A random batch in the loader's layout: uint8 pixels, or latent parameters (mean, logvar)."""
    import torch

    if kind == "pixels":
        values = {"pixel_values": torch.randint(0, 256, (batch_size, 3, resolution, resolution), dtype=torch.uint8)}
    else:
        channels, side = latent_shape
        mean = torch.randn(batch_size, channels, side, side)
        values = {"latent_parameters": torch.cat([mean, torch.full_like(mean, -6.0)], dim=1)}
    return {"inputs": {**values, "text": [CAPTION] * batch_size}}


def time_steps(step: Callable[[], None], iters: int, warmup: int, device: torch.device) -> dict[str, float]:
    """Seconds per step over ``iters`` steps after ``warmup``; peak memory on a GPU (warm-up included)."""
    import torch

    def synchronize() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(warmup):
        step()
    synchronize()
    start = time.perf_counter()
    for _ in range(iters):
        step()
    synchronize()
    seconds = (time.perf_counter() - start) / iters
    peak = torch.cuda.max_memory_allocated(device) / 2 ** 30 if device.type == "cuda" else None
    return {"s_per_step": seconds, "peak_memory_gib": peak}


def _free(device: torch.device) -> None:
    import gc

    import torch

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def run_gpu(args: argparse.Namespace) -> dict[str, Any]:
    """Time the paper's loop and diffengine's fast defaults; batch sizes include the largest that fits."""
    import torch

    from diffengine.engine import GuardedAmpOptimWrapper, GuardedOptimWrapper, ParamGroupsOptimWrapperConstructor
    from diffengine.models.vision import drop_vae_encoder

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    resolution = args.resolution or (512 if args.size == "full" else 32)
    for value in args.batch_sizes:
        if value != "max" and not (value.isdigit() and int(value) >= 1):
            raise ValueError(f"--batch-sizes: expected whole numbers >= 1 or max, got {value!r}")
    cfg = packaged_config(args.size)
    model_kwargs = _model_kwargs(cfg)
    flops = _flops_for(args.size, args.data_dir, resolution)["per_sample"]
    flops_by_input = {"pixels": flops["step_total"], "latents": flops["step_total_from_latents"]}
    peak, peak_source = peak_flops(device, args.peak_tflops)
    rows: list[dict[str, Any]] = []

    def add_row(loop: str, dtype: str, inputs: str, batch_size: int, timing: dict, note: str = "") -> None:
        samples_per_s = batch_size / timing["s_per_step"]
        mfu = samples_per_s * flops_by_input[inputs] / peak if peak else None
        rows.append({"loop": loop, "dtype": dtype, "inputs": inputs, "batch_size": batch_size, "note": note,
                     "samples_per_s": samples_per_s, **timing, "mfu": mfu})
        print(f"  {loop}, {dtype}, {inputs}, batch {batch_size}{note}: {samples_per_s:.2f} samples/s", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        if args.size == "full":
            t5_dir, sd_dir = make_full_size_assets(Path(tmp))
        else:
            t5_dir, sd_dir, _ = demo_models(args.data_dir)
        print(f"models written in {time.perf_counter() - start:.0f} s", flush=True)
        if not args.no_paper:
            plain = PlainLoop(t5_dir, sd_dir, model_kwargs, *_optimizer_settings(cfg), device=device)
            batch = _batch("pixels", 1, resolution, (0, 0))
            add_row("paper loop", "float32", "pixels", 1,
                    time_steps(lambda: plain.step(batch["inputs"]), args.iters, args.warmup, device))
            del plain
            _free(device)
        model = cfg.model["type"](**{**model_kwargs, "text_encoder": str(t5_dir), "vision_model": str(sd_dir),
                                     "weight_dtype": "bfloat16",
                                     "gradient_checkpointing": args.gradient_checkpointing}).to(device)
    wrapper = {key: value for key, value in cfg.optim_wrapper.items() if key not in ("constructor", "paramwise_cfg")}
    if device.type == "cuda":  # what `diffengine train --amp` builds
        wrapper.update(type=GuardedAmpOptimWrapper, dtype="bfloat16")
    else:  # MMEngine's AmpOptimWrapper refuses a CPU: autocast by hand (the CPU check of this path)
        wrapper = {key: value for key, value in wrapper.items() if key not in ("dtype", "loss_scale")}
        wrapper.update(type=GuardedOptimWrapper)
    optim = ParamGroupsOptimWrapperConstructor(wrapper, cfg.optim_wrapper.get("paramwise_cfg"))(model)
    autocast = (contextlib.nullcontext if device.type == "cuda"
                else lambda: torch.autocast("cpu", dtype=torch.bfloat16))

    def train_step(batch: dict) -> None:
        with autocast():
            model.train_step(batch, optim)

    latent_shape = (model.vae.config.latent_channels, resolution // 2 ** (len(model.vae.config.block_out_channels) - 1))
    fast = f"diffengine fast defaults{', gradient checkpointing' if args.gradient_checkpointing else ''}"
    for inputs in ("pixels", "latents"):
        if inputs not in args.inputs:
            continue
        if inputs == "latents":
            drop_vae_encoder(model.vae)  # as model.vae_encoder=False: precomputed latents only
            _free(device)
        for value in args.batch_sizes:
            note = ""
            if value == "max":
                def try_batch(batch_size: int, inputs: str = inputs) -> None:
                    batch = _batch(inputs, batch_size, resolution, latent_shape)
                    for _ in range(2):  # the second step holds the optimizer state too
                        train_step(batch)

                def free() -> None:
                    optim.zero_grad()
                    _free(device)

                batch_size = find_largest_batch(memory_probe(try_batch, free), args.max_batch)
                if batch_size == 0:
                    print(f"  {fast}, {inputs}: not even batch 1 fits", flush=True)
                    continue
                note = f" (largest that fits, searched up to {args.max_batch})"
            else:
                batch_size = int(value)
            batch = _batch(inputs, batch_size, resolution, latent_shape)
            add_row(fast, "bfloat16", inputs, batch_size,
                    time_steps(lambda batch=batch: train_step(batch), args.iters, args.warmup, device), note)
    result = {"size": args.size, "config": CONFIG_BY_SIZE[args.size], "resolution": resolution,
              "device": str(device),
              "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
              "peak_flops": peak, "peak_flops_source": peak_source, "iters": args.iters, "warmup": args.warmup,
              "flops_per_sample": flops, "rows": rows,
              "method": "fast rows time model.train_step(batch, optim_wrapper) (what each iteration of "
                        "`diffengine train --amp` runs, without the loop's hooks: `bench cpu` measures those); "
                        "MFU = samples/s x counted FLOPs per sample (model FLOPs: recomputation not counted) "
                        "/ peak FLOP/s"}
    print_gpu(result)
    return {"gpu": result}


def print_gpu(result: dict[str, Any]) -> None:
    """The GPU mode's table."""
    print(f"\ndiffengine bench gpu: {result['size']} size at {result['resolution']} px on {result['device_name']}; "
          f"peak {result['peak_flops'] / 1e12 if result['peak_flops'] else 'n/a'} TFLOP/s "
          f"({result['peak_flops_source']})")
    print("| loop | dtype | inputs | batch | samples/s | peak memory | MFU |\n|---|---|---|---|---|---|---|")
    for row in result["rows"]:
        memory = f"{row['peak_memory_gib']:.1f} GiB" if row["peak_memory_gib"] is not None else "n/a"
        mfu = f"{100 * row['mfu']:.1f} %" if row["mfu"] is not None else "n/a"
        print(f"| {row['loop']} | {row['dtype']} | {row['inputs']} | {row['batch_size']}{row['note']} | "
              f"{row['samples_per_s']:.2f} | {memory} | {mfu} |")


# ---------------------------------------------------------------- machine


def machine_info() -> dict[str, Any]:
    """Machine, accelerator and library versions of this run."""
    import os
    import platform
    from importlib.metadata import PackageNotFoundError, version

    import torch

    versions = {}
    for package in ("torch", "diffusers", "transformers", "peft", "mmengine", "diffengine"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = None
    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "python": platform.python_version(),
            "torch_threads": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None, "versions": versions}
