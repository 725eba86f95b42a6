"""``bench gpu``: samples/s, peak memory and MFU of the paper's loop and of diffengine's fast defaults.

The paper's loop runs in fp32 at batch 1; the fast defaults (bf16 frozen weights + bf16
autocast) from pixels and from precomputed latents, at batch 1, 16 and the largest that fits.
"""
from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from diffengine.contracts import LATENTS_KEY, PIXELS_KEY, TEXT_KEY

from ..arguments import resolve_device
from .flops import size_flops
from .models import (
    CONFIG_BY_SIZE,
    default_resolution,
    demo_models,
    latent_side,
    make_full_size_assets,
    model_kwargs_of,
    optimizer_settings_of,
    packaged_config,
)
from .plain_loop import PlainLoop

if TYPE_CHECKING:
    import torch

# dense bf16 peak FLOP/s by a substring of torch.cuda.get_device_name(), first match wins
PEAK_FLOPS = (("H100 PCIe", 756e12), ("H100", 989e12), ("H200", 989e12), ("A100", 312e12))
CAPTION = "a photo of a cat wearing a red hat"


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
        values = {PIXELS_KEY: torch.randint(0, 256, (batch_size, 3, resolution, resolution), dtype=torch.uint8)}
    else:
        channels, side = latent_shape
        mean = torch.randn(batch_size, channels, side, side)
        values = {LATENTS_KEY: torch.cat([mean, torch.full_like(mean, -6.0)], dim=1)}
    return {"inputs": {**values, TEXT_KEY: [CAPTION] * batch_size}}


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


def busy_seconds(intervals: list[tuple[float, float]]) -> float:
    """Length of the union of ``(start, end)`` intervals: time with at least one of them running."""
    total, reach = 0.0, float("-inf")
    for start, end in sorted(intervals):
        if end > reach:
            total += end - max(start, reach)
            reach = end
    return total


def profile_steps(step: Callable[[], None], steps: int, device: torch.device, trace: Path) -> dict[str, Any]:
    """Profile ``steps`` steps with torch.profiler: the Chrome trace goes to ``trace``.

    Returns the wall and device-busy seconds per step, and the operators that took the most self
    time on the device (on a CPU: on the host). A busy fraction well below 1 means the GPU waits for
    the host to launch work.
    """
    import torch
    from torch.profiler import ProfilerActivity, profile

    on_gpu = device.type == "cuda"
    activities = [ProfilerActivity.CPU, *([ProfilerActivity.CUDA] if on_gpu else [])]
    if on_gpu:
        torch.cuda.synchronize(device)
    with profile(activities=activities) as profiler:
        start = time.perf_counter()
        for _ in range(steps):
            step()
        if on_gpu:
            torch.cuda.synchronize(device)
        wall = time.perf_counter() - start
    trace.parent.mkdir(parents=True, exist_ok=True)
    profiler.export_chrome_trace(str(trace))
    kernels = [(event.time_range.start, event.time_range.end) for event in profiler.events()
               if event.device_type == torch.autograd.DeviceType.CUDA]
    busy = busy_seconds(kernels) / 1e6 if on_gpu else None  # the profiler's times are in microseconds
    time_key = "self_device_time_total" if on_gpu else "self_cpu_time_total"
    averages = sorted(profiler.key_averages(), key=lambda average: getattr(average, time_key), reverse=True)
    top = [{"name": average.key, "calls_per_step": average.count / steps,
            "self_ms_per_step": getattr(average, time_key) / 1e3 / steps} for average in averages[:15]]
    return {"trace": str(trace), "steps": steps, "wall_s_per_step": wall / steps,
            "device_busy_s_per_step": busy / steps if on_gpu else None,
            "device_busy_fraction": busy / wall if on_gpu else None,
            "top_ops_by": "device self time" if on_gpu else "host self time", "top_ops": top}


def _free(device: torch.device) -> None:
    import gc

    import torch

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


# model options the fast rows set whatever the config says, and how to choose them instead
_SET_BY_BENCH = {"model.weight_dtype": "bfloat16 frozen weights, as the configs train on a GPU",
                 "model.gradient_checkpointing": "use --gradient-checkpointing"}


def run_gpu(args: argparse.Namespace) -> dict[str, Any]:
    """Time the paper's loop and diffengine's fast defaults; batch sizes include the largest that fits."""
    import torch

    from diffengine.engine import GuardedAmpOptimWrapper, GuardedOptimWrapper, ParamGroupsOptimWrapperConstructor
    from diffengine.models.vision import drop_vae_encoder

    device = torch.device(resolve_device(args.device))
    resolution = default_resolution(args.size, args.resolution)
    for value in args.batch_sizes:
        if value != "max" and not (value.isdigit() and int(value) >= 1):
            raise ValueError(f"--batch-sizes: expected whole numbers >= 1 or max, got {value!r}")
    for option in args.cfg_options:  # what the fast rows set themselves: an option would be replaced unseen
        key = option.partition("=")[0]
        if key in _SET_BY_BENCH:
            raise ValueError(f"--cfg-options {key}: bench gpu sets it itself ({_SET_BY_BENCH[key]})")
    cfg = packaged_config(args.size, *args.cfg_options)
    model_kwargs = model_kwargs_of(cfg)
    # the MFU's denominator counted for the model timed here, options included
    flops = size_flops(args.size, args.data_dir, resolution, cfg)["per_sample"]
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
            optimizer, group_lr, clip_grad = optimizer_settings_of(cfg)
            # the paper's AdamW: the fused one is among diffengine's fast defaults
            optimizer = {key: value for key, value in optimizer.items() if key != "fused"}
            plain = PlainLoop(t5_dir, sd_dir, model_kwargs, optimizer, group_lr, clip_grad, device=device)
            batch = _batch("pixels", 1, resolution, (0, 0))
            add_row("paper loop", "float32", "pixels", 1,
                    time_steps(lambda: plain.step(batch["inputs"]), args.iters, args.warmup, device))
            del plain
            _free(device)
        model = cfg.model["type"](**{**model_kwargs, "text_encoder": str(t5_dir), "vision_model": str(sd_dir),
                                     "weight_dtype": "bfloat16",
                                     "gradient_checkpointing": args.gradient_checkpointing}).to(device)
    wrapper = {key: value for key, value in cfg.optim_wrapper.items() if key not in ("constructor", "paramwise_cfg")}
    if device.type == "cuda":  # the config's wrapper options (fused AdamW, host reads) with bf16 autocast
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

    latent_shape = (model.vae.config.latent_channels, latent_side(resolution, model.vae.config))
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
            if args.profile:
                trace = Path(args.out).with_name(f"{Path(args.out).stem}_trace_{inputs}_b{batch_size}.json")
                rows[-1]["profile"] = profile_steps(lambda batch=batch: train_step(batch), args.profile,
                                                    device, trace)
    result = {"size": args.size, "config": CONFIG_BY_SIZE[args.size], "resolution": resolution,
              "device": str(device),
              "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
              "cfg_options": list(args.cfg_options), "peak_flops": peak, "peak_flops_source": peak_source,
              "iters": args.iters, "warmup": args.warmup,
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
          f"({result['peak_flops_source']})"
          + (f"; config overrides: {' '.join(result['cfg_options'])}" if result["cfg_options"] else ""))
    print("| loop | dtype | inputs | batch | samples/s | peak memory | MFU |\n|---|---|---|---|---|---|---|")
    for row in result["rows"]:
        memory = f"{row['peak_memory_gib']:.1f} GiB" if row["peak_memory_gib"] is not None else "n/a"
        mfu = f"{100 * row['mfu']:.1f} %" if row["mfu"] is not None else "n/a"
        print(f"| {row['loop']} | {row['dtype']} | {row['inputs']} | {row['batch_size']}{row['note']} | "
              f"{row['samples_per_s']:.2f} | {memory} | {mfu} |")
    for row in result["rows"]:
        if "profile" in row:
            print_profile(row)


def print_profile(row: dict[str, Any]) -> None:
    """One profiled row: how busy the device was and its top operators."""
    profile = row["profile"]
    busy = (f"device busy {profile['device_busy_s_per_step']:.3f} s of {profile['wall_s_per_step']:.3f} s "
            f"per step ({100 * profile['device_busy_fraction']:.0f} %)"
            if profile["device_busy_fraction"] is not None else f"{profile['wall_s_per_step']:.3f} s per step")
    print(f"\nprofile of {row['inputs']}, batch {row['batch_size']} ({profile['steps']} steps): {busy}; "
          f"trace: {profile['trace']}")
    print(f"| operator | calls/step | {profile['top_ops_by']} (ms/step) |\n|---|---|---|")
    for op in profile["top_ops"]:
        print(f"| {op['name'][:80]} | {op['calls_per_step']:g} | {op['self_ms_per_step']:.2f} |")
