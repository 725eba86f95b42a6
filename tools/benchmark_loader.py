"""Measure the webdataset loader's images/s against the raw PIL decode + transform limit.

The raw limit is one process decoding the same in-memory JPEGs (with the same JPEG draft mode) and
applying the same ImageTransform in a plain loop: no tar reading, shuffling, batching or worker
IPC. The loader rows run build_wds_dataloader as training does. "ratio/worker" is images/s over
raw images/s times the number of workers (at least 1), so 1.0 means each worker runs at the raw
single-process speed. "CPU ms/img" sums the CPU time of the main process and its workers (Linux
/proc) and "CPU ratio" is raw's CPU per image over the row's: unlike wall-clock rates it barely
moves when other processes compete for the cores. Results: docs/loader_benchmark.md.

    python tools/benchmark_loader.py [--num-images 256] [--resolutions 256 512] [--workers 0 1 2]
"""
from __future__ import annotations

import argparse
import io
import math
import multiprocessing
import os
import platform
import random
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from diffengine.datasets import ImageTransform, build_wds_dataloader, write_wds_shards

WIDTH, HEIGHT = 768, 576
NUM_SHARDS = 8  # enough for every worker count measured here to own whole shards


def synthetic_photo(rng: np.random.Generator) -> Image.Image:
    """A photo-like RGB image: gradients, smooth colour blobs, mid-frequency texture and grain."""

    def blobs(cells_w: int, cells_h: int, amplitude: int) -> np.ndarray:
        small = rng.integers(128 - amplitude, 128 + amplitude, (cells_h, cells_w, 3), dtype=np.uint8)
        upsampled = Image.fromarray(small).resize((WIDTH, HEIGHT), Image.Resampling.BICUBIC)
        return np.asarray(upsampled, dtype=np.int16) - 128

    ramp_x = np.linspace(0, 1, WIDTH, dtype=np.float32)[None, :, None]
    ramp_y = np.linspace(0, 1, HEIGHT, dtype=np.float32)[:, None, None]
    slope_x, slope_y = rng.uniform(-80, 80, (2, 3)).astype(np.float32)
    base = rng.uniform(60, 190, 3).astype(np.float32) + ramp_x * slope_x + ramp_y * slope_y
    # Pure noise would make entropy decoding unrealistically slow (and files ~1 MB); this mix
    # gives ~105 KB at quality 90, close to typical web photos of this size.
    pixels = (base.astype(np.int16) + blobs(12, 9, 60) + blobs(96, 72, 25)
              + rng.integers(-8, 9, (HEIGHT, WIDTH, 3), dtype=np.int16))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def make_jpegs(num_images: int, seed: int = 0) -> list[bytes]:
    """Deterministic synthetic JPEGs (quality 90)."""
    rng = np.random.default_rng(seed)
    jpegs = []
    for _ in range(num_images):
        buffer = io.BytesIO()
        synthetic_photo(rng).save(buffer, format="JPEG", quality=90)
        jpegs.append(buffer.getvalue())
    return jpegs


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a live process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def pipeline_cpu_seconds() -> float:
    """CPU seconds of this process and its live children (the DataLoader workers)."""
    return time.process_time() + sum(process_cpu_seconds(child.pid) for child in multiprocessing.active_children())


def raw_rate(jpegs: list[bytes], resolution: int, num_samples: int) -> tuple[float, float]:
    """Images/s and CPU ms per image of decoding and transforming in a plain single-process loop."""
    transform = ImageTransform(resolution)
    rng = random.Random(0)

    def one(data: bytes) -> None:
        with Image.open(io.BytesIO(data)) as image:
            image.draft(None, (resolution, resolution))  # what the loader does for JPEGs too
            transform(image, rng)

    for data in jpegs[:8]:
        one(data)  # warm-up: first-call allocations and library initialisation
    start, cpu = time.perf_counter(), time.process_time()
    for index in range(num_samples):
        one(jpegs[index % len(jpegs)])
    return (num_samples / (time.perf_counter() - start),
            (time.process_time() - cpu) * 1000 / num_samples)


def loader_rate(pattern: str, resolution: int, num_workers: int, batch_size: int,
                num_samples: int) -> tuple[float, float]:
    """Images/s and CPU ms per image (all processes) of build_wds_dataloader, after warm-up."""
    # Each worker has prefetch_factor (2) batches requested ahead: two per worker before the timed
    # window absorb start-up and the shuffle buffer's first fill, and as many after it keep the
    # workers busy until it closes, so the batches done ahead at its two ends cancel out.
    margin_batches = 2 * max(1, num_workers)
    measured_batches = max(1, num_samples // batch_size)
    loader = build_wds_dataloader(
        pattern, batch_size=batch_size, resolution=resolution, num_workers=num_workers,
        num_samples_per_epoch=(2 * margin_batches + measured_batches) * batch_size)
    batches = iter(loader)
    for _ in range(margin_batches):
        next(batches)
    start, cpu = time.perf_counter(), pipeline_cpu_seconds()
    images = sum(len(next(batches)["inputs"]["text"]) for _ in range(measured_batches))
    elapsed, cpu = time.perf_counter() - start, pipeline_cpu_seconds() - cpu
    return images / elapsed, cpu * 1000 / images


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num-images", type=int, default=256, help="distinct synthetic images written to shards")
    parser.add_argument("--num-samples", type=int, default=512, help="images timed per measurement")
    parser.add_argument("--resolutions", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3,
                        help="rounds over all rows; the best run is reported (outside load only ever slows a run)")
    return parser.parse_args()


def main() -> None:
    """Generate shards, measure every (resolution, workers) pair and print the table."""
    args = parse_args()
    if args.num_images < NUM_SHARDS or max(args.workers) > NUM_SHARDS:
        raise SystemExit(f"need --num-images >= {NUM_SHARDS} and --workers <= {NUM_SHARDS}")
    print(f"python {platform.python_version()}, torch {torch.__version__}, PIL {Image.__version__}, "
          f"{os.cpu_count()} CPU(s), torch threads {torch.get_num_threads()}, "
          f"load average {os.getloadavg()[0]:.2f} at start")
    start = time.perf_counter()
    jpegs = make_jpegs(args.num_images)
    with tempfile.TemporaryDirectory(prefix="loader_bench_") as tmp:
        write_wds_shards(((f"{i:06d}", data, f"synthetic photo {i}", None) for i, data in enumerate(jpegs)),
                         tmp, maxcount=math.ceil(args.num_images / NUM_SHARDS), progress=False)
        pattern = str(Path(tmp) / f"{{00000..{NUM_SHARDS - 1:05d}}}.tar")
        print(f"{args.num_images} JPEGs {WIDTH}x{HEIGHT}, mean {statistics.mean(map(len, jpegs)) / 1024:.0f} KiB, "
              f"{NUM_SHARDS} shards, generated in {time.perf_counter() - start:.0f} s; "
              f"batch size {args.batch_size}, {args.num_samples} images timed, best of {args.repeats}\n")
        # Rounds interleave all rows so that a burst of outside load hits every row alike.
        runs: dict[tuple[int, str | int], list[tuple[float, float]]] = {}
        for _ in range(args.repeats):
            for resolution in args.resolutions:
                runs.setdefault((resolution, "raw"), []).append(raw_rate(jpegs, resolution, args.num_samples))
                for workers in args.workers:
                    runs.setdefault((resolution, workers), []).append(
                        loader_rate(pattern, resolution, workers, args.batch_size, args.num_samples))
    # CPU ms/img sums all processes; "CPU ratio" (raw's CPU per image over the row's) is the
    # efficiency that outside load distorts least, as waiting for a core costs no CPU time.
    print(f"{'resolution':>10} {'workers':>8} {'images/s':>9} {'ratio/worker':>13} {'worst run':>10} "
          f"{'CPU ms/img':>11} {'CPU ratio':>10}")
    for resolution in args.resolutions:
        raw = max(rate for rate, _ in runs[resolution, "raw"])
        raw_cpu = min(cpu for _, cpu in runs[resolution, "raw"])
        for row in ["raw", *args.workers]:
            rates, cpus = zip(*runs[resolution, row])
            ratio = max(rates) / (raw * (1 if row == "raw" else max(1, row)))
            print(f"{resolution:>10} {row:>8} {max(rates):>9.1f} {ratio:>13.2f} {min(rates):>10.1f} "
                  f"{min(cpus):>11.2f} {raw_cpu / min(cpus):>10.2f}")
    print(f"\ntotal {time.perf_counter() - start:.0f} s, load average {os.getloadavg()[0]:.2f} at end")


if __name__ == "__main__":
    main()
