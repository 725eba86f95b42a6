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
- ``loader``: the webdataset loader's images/s per worker count against the raw decode +
  transform limit of the same synthetic JPEGs (docs/loader_benchmark.md).

The package, one module a concern: ``models`` (the models and config settings of each size),
``plain_loop`` (the paper's step in plain PyTorch), ``cpu`` and ``startup`` (``bench cpu``),
``flops``, ``gpu`` and ``loader`` (their modes); this module wires the CLI and writes the JSON report.
Heavy libraries are imported inside the functions: the CLI imports this package for ``--help``.
"""
from __future__ import annotations

import argparse
import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ...file_writes import write_text_whole
from ..arguments import (
    add_cfg_options_argument,
    add_overwrite_argument,
    image_side,
    positive_float,
    positive_int,
    writable_file,
)
from .cpu import run_cpu
from .flops import run_flops
from .gpu import PEAK_FLOPS, run_gpu
from .loader import add_loader_arguments, run_loader
from .models import CONFIG_BY_SIZE, WEIGHTED_SIZES


def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    """The modes of ``bench`` and their options (argparse only: keeps ``--help`` fast)."""
    modes = parser.add_subparsers(dest="mode", required=True, metavar="MODE")

    def mode(name: str, help_text: str, demo_assets: bool = True) -> argparse.ArgumentParser:
        sub = modes.add_parser(name, help=help_text, description=help_text)
        sub.add_argument("--work-dir", default="work_dirs/bench", help="where the JSON goes by default")
        sub.add_argument("--out", help="JSON file of every figure (default: WORK_DIR/bench_MODE.json)")
        add_overwrite_argument(sub, "the JSON file")
        if demo_assets:
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
                       help="full: T5-Large + SD1.5 UNet + SD VAE; sdxl: T5-Large + SDXL base UNet + SD VAE "
                       "(lavi_bridge_t5_sdxl_laion); sd35_medium / flux_dev: Llama-2-7B + SD3.5-medium / "
                       "FLUX.1-dev (lavi_bridge_llama2_sd35_medium_laion / _flux_dev_laion); tiny: the demo's models")
    flops.add_argument("--resolution", type=image_side,
                       help="px (default: 512 full, 32 tiny, 1024 the others)")

    gpu = mode("gpu", "samples/s, peak memory and MFU of the paper's loop and diffengine's fast defaults")
    gpu.add_argument("--size", choices=WEIGHTED_SIZES, default="full",
                     help="full: T5-Large + SD1.5 UNet + SD VAE (random weights); tiny: the demo's models "
                     "(a CPU check of this mode: --size tiny --device cpu)")
    gpu.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    gpu.add_argument("--resolution", type=image_side, help="px (default: 512 full, 32 tiny)")
    gpu.add_argument("--batch-sizes", nargs="+", default=["1", "16", "max"], metavar="N|max",
                     help="batch sizes of the fast rows; max: the largest that fits (doubling, then bisection)")
    gpu.add_argument("--inputs", nargs="+", choices=["pixels", "latents"], default=["pixels", "latents"],
                     help="pixels (the VAE encodes every step) and/or precomputed latent parameters")
    gpu.add_argument("--no-paper", action="store_true", help="skip the paper's loop (fp32, batch 1)")
    gpu.add_argument("--gradient-checkpointing", action="store_true", help="for the fast rows")
    gpu.add_argument("--iters", type=positive_int, default=10, help="timed steps per row")
    gpu.add_argument("--warmup", type=positive_int, default=3, help="untimed steps per row first")
    gpu.add_argument("--max-batch", type=positive_int, default=1024, help="upper bound of the max search")
    gpu.add_argument("--profile", type=positive_int, default=0, metavar="STEPS",
                     help="after timing each fast row, profile STEPS more steps with torch.profiler: the row "
                     "records how busy the GPU was and the top operators; the Chrome trace goes beside the "
                     "JSON as OUT_STEM_trace_INPUTS_bBATCH.json (default: no profiling)")
    add_cfg_options_argument(gpu, "overrides of the size's packaged config, as in `diffengine train` (e.g. "
                             "model.torch_compile=True model.channels_last=False)")
    gpu.add_argument("--peak-tflops", type=positive_float, default=None,
                     help="the device's peak TFLOP/s for MFU (default: dense bf16 by GPU name: "
                     + ", ".join(f"{name} {peak / 1e12:.0f}" for name, peak in PEAK_FLOPS) + ")")

    add_loader_arguments(mode("loader", "the webdataset loader's images/s per worker count against the raw "
                              "decode + transform limit, on synthetic JPEGs", demo_assets=False))


def run_bench(args: argparse.Namespace, command: list[str]) -> int:
    """Run one mode, print its table and write its JSON (recording ``command``); returns the exit code."""
    import os

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    out = Path(args.out or Path(args.work_dir) / f"bench_{args.mode}.json")
    writable_file(out, args.overwrite)  # before the run, not after its minutes of measuring
    args.out = str(out)  # the modes write their other files beside it
    started, load_before = time.perf_counter(), os.getloadavg()
    figures = {"cpu": run_cpu, "flops": run_flops, "gpu": run_gpu, "loader": run_loader}[args.mode](args)
    report = {"mode": args.mode, "command": command,
              "date": datetime.now(UTC).isoformat(timespec="seconds"), "machine": machine_info(),
              # other work on the machine slows both sides of a comparison, unevenly
              "load_average_1_5_15_min": {"start": load_before, "end": os.getloadavg()},
              "wall_s": round(time.perf_counter() - started, 1), **figures}
    write_text_whole(out, json.dumps(report, indent=2) + "\n")
    print(f"load average (1 min) at start / end: {load_before[0]:.2f} / {os.getloadavg()[0]:.2f} "
          f"on {os.cpu_count()} CPUs; figures written to {out}")
    return 0


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
