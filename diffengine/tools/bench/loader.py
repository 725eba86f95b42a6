"""``bench loader``: the webdataset loader's images/s against the raw PIL decode + transform limit.

The raw limit is one process decoding the same in-memory JPEGs (with the same JPEG draft mode) and
applying the same ``ImageTransform`` in a plain loop: no tar reading, shuffling, batching or worker
IPC; "raw xN" is N such loops running at once, what the machine itself allows N workers (shared
caches and memory bandwidth, SMT siblings, clocks that drop as more cores work). The loader rows
run ``build_wds_dataloader`` as training does. "ratio/worker" is images/s over raw images/s times
the number of workers (at least 1), so 1.0 means each worker runs at the raw single-process
speed; "vs raw xN" divides instead by the mean of two raw xN runs, made right before and right
after the loader's timed window while its workers wait ("worst": the lowest round). "CPU ms/img"
sums the CPU time of the main process and its workers (Linux /proc) and "CPU ratio" is raw's CPU
per image over the row's. "decode share" is the part of the decoding processes' CPU time (the
workers', or this process's with 0 workers) spent decoding and transforming, the work raw does,
measured at the same moment as the rest and so immune to drift. Every ratio is taken within one
round and the table shows the median over rounds. Results: docs/loader_benchmark.md.
"""
from __future__ import annotations

import argparse
import functools
import io
import math
import multiprocessing
import os
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..arguments import image_side, non_negative_int, positive_int

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

WIDTH, HEIGHT = 768, 576
NUM_SHARDS = 8  # enough for every worker count measured here to own whole shards
# CPU seconds that each process (0: this one, 1 + id: DataLoader worker id) spent in the loader's
# per-sample decode, i.e. JPEG decode + ImageTransform, the work raw does. Shared memory, so
# that the forked workers' counts reach this process; one slot per process, so no locking.
_DECODE_CPU: Any = None


def add_loader_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``bench loader``."""
    parser.add_argument("--num-images", type=positive_int, default=256,
                        help="distinct synthetic images written to shards")
    parser.add_argument("--num-samples", type=positive_int, default=512, help="images timed per measurement")
    parser.add_argument("--resolutions", type=image_side, nargs="+", default=[256, 512])
    parser.add_argument("--workers", type=non_negative_int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--batch-size", type=positive_int, default=16)
    parser.add_argument("--shuffle-buffer", type=non_negative_int, default=1000,
                        help="the loader's sample shuffle buffer (its default); as many samples per worker warm up")
    parser.add_argument("--repeats", type=positive_int, default=5,
                        help="rounds over all rows; ratios are paired within a round, the table shows their median")


def synthetic_photo(rng: np.random.Generator) -> Image.Image:
    """A photo-like RGB image: gradients, smooth colour blobs, mid-frequency texture and grain."""
    import numpy as np
    from PIL import Image

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
    import numpy as np

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


def count_decode_cpu() -> None:
    """Wrap WebImageTextDataset._decode to add its CPU time to ``_DECODE_CPU`` (before any loader starts)."""
    import torch

    from diffengine.datasets.wds_dataset import WebImageTextDataset

    global _DECODE_CPU
    if _DECODE_CPU is not None:
        return
    _DECODE_CPU = counts = multiprocessing.RawArray("d", 1 + 64)
    decode = WebImageTextDataset._decode

    def timed(self: WebImageTextDataset, item: dict, rng: random.Random) -> Any:
        start = time.process_time()
        try:
            return decode(self, item, rng)
        finally:
            info = torch.utils.data.get_worker_info()
            counts[0 if info is None else 1 + info.id] += time.process_time() - start

    WebImageTextDataset._decode = timed


def cpu_steal_ticks() -> tuple[int, int]:
    """(steal, total) jiffies of all CPUs from /proc/stat; (0, 0) where there is none."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except OSError:
        return 0, 0
    return (fields[7] if len(fields) > 7 else 0), sum(fields)


def raw_loop(jpegs: list[bytes], resolution: int, num_samples: int) -> tuple[float, float]:
    """Seconds and CPU seconds of decoding and transforming `num_samples` images in a plain loop."""
    from PIL import Image

    from diffengine.datasets import ImageTransform

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
    return time.perf_counter() - start, time.process_time() - cpu


def _raw_process(jpegs: list[bytes], resolution: int, num_samples: int, barrier: Any, results: Any) -> None:
    barrier.wait()  # all processes start timing together
    results.put(raw_loop(jpegs, resolution, num_samples))


def raw_rate(jpegs: list[bytes], resolution: int, num_samples: int, processes: int = 1) -> tuple[float, float]:
    """Images/s and CPU ms per image of `processes` plain loops running at once (the raw limit).

    With several processes this is what the machine itself allows N workers (shared caches,
    memory bandwidth, SMT siblings, turbo clocks), without any loader in the way.
    """
    if processes == 1:
        elapsed, cpu = raw_loop(jpegs, resolution, num_samples)
        return num_samples / elapsed, cpu * 1000 / num_samples
    context = multiprocessing.get_context("fork")
    barrier, results = context.Barrier(processes), context.Queue()
    workers = [context.Process(target=_raw_process, args=(jpegs, resolution, num_samples, barrier, results))
               for _ in range(processes)]
    for worker in workers:
        worker.start()
    runs = [results.get() for _ in workers]
    for worker in workers:
        worker.join()
    images = processes * num_samples
    # the slowest process bounds the wall time, as the slowest worker bounds a loader's
    return images / max(elapsed for elapsed, _ in runs), sum(cpu for _, cpu in runs) * 1000 / images


def loader_rate(pattern: str, resolution: int, num_workers: int, batch_size: int, num_samples: int,
                shuffle_buffer: int, reference: Callable[[], tuple[float, float]]) -> tuple[float, float, float, float]:
    """Images/s and CPU ms per image (all processes) of build_wds_dataloader in its steady state,
    the images/s of `reference` (raw xN) run right before and right after the timed window, and
    the decode share: how much of the decoding processes' CPU time decode + transform took."""
    from diffengine.datasets import build_wds_dataloader

    # Each worker has prefetch_factor (2) batches requested ahead: two per worker consumed just
    # before the timed window and as many left after it keep the workers busy at both ends, so
    # the batches done ahead at its two ends cancel out. Before that, each worker delivers as
    # many samples as its shuffle buffer holds: until the buffer's memory has been allocated
    # once, the samples it reads land in fresh pages, a start-up cost that is not what training
    # runs at for hours. (These passes hold at most 256 samples by default, so the buffer drains
    # at the end of each pass and refills into the same memory.)
    workers = max(1, num_workers)
    margin_batches = 2 * workers
    fill_batches = math.ceil(shuffle_buffer / batch_size) * workers
    measured_batches = max(1, num_samples // batch_size)
    loader = build_wds_dataloader(
        pattern, batch_size=batch_size, resolution=resolution, num_workers=num_workers,
        shuffle_buffer=shuffle_buffer,
        num_samples_per_epoch=(3 * margin_batches + fill_batches + measured_batches) * batch_size)
    batches = iter(loader)
    for _ in range(fill_batches):
        next(batches)
    # The raw reference runs while the workers wait on their full prefetch queues: the machine's
    # speed drifts within seconds, so only a reference taken this close pairs well.
    before, _ = reference()
    for _ in range(margin_batches):
        next(batches)
    start, cpu, decode_cpu = time.perf_counter(), pipeline_cpu_seconds(), sum(_DECODE_CPU)
    main_cpu = time.process_time()
    images = sum(len(next(batches)["inputs"]["text"]) for _ in range(measured_batches))
    elapsed, cpu, decode_cpu = time.perf_counter() - start, pipeline_cpu_seconds() - cpu, sum(_DECODE_CPU) - decode_cpu
    # the share of the decoding processes' CPU time that went into decode + transform
    decoding_cpu = cpu - (time.process_time() - main_cpu) if num_workers else cpu
    after, _ = reference()
    return images / elapsed, cpu * 1000 / images, (before + after) / 2, decode_cpu / decoding_cpu


def run_loader(args: argparse.Namespace) -> dict[str, Any]:
    """Generate shards, measure every (resolution, workers) pair, print the table, return its rows."""
    from diffengine.datasets import write_wds_shards

    if args.num_images < NUM_SHARDS or max(args.workers) > NUM_SHARDS:
        raise ValueError(f"bench loader needs --num-images >= {NUM_SHARDS} and --workers <= {NUM_SHARDS}")
    count_decode_cpu()
    start, steal_start = time.perf_counter(), cpu_steal_ticks()
    jpegs = make_jpegs(args.num_images)
    with tempfile.TemporaryDirectory(prefix="loader_bench_") as tmp:
        write_wds_shards(((f"{i:06d}", data, f"synthetic photo {i}", None) for i, data in enumerate(jpegs)),
                         tmp, maxcount=math.ceil(args.num_images / NUM_SHARDS), progress=False)
        pattern = str(Path(tmp) / f"{{00000..{NUM_SHARDS - 1:05d}}}.tar")
        print(f"{args.num_images} JPEGs {WIDTH}x{HEIGHT}, mean {statistics.mean(map(len, jpegs)) / 1024:.0f} KiB, "
              f"{NUM_SHARDS} shards, generated in {time.perf_counter() - start:.0f} s; "
              f"batch size {args.batch_size}, shuffle buffer {args.shuffle_buffer} "
              "(as many samples per worker warm up), "
              f"{args.num_samples} images timed, median of {args.repeats} rounds\n")
        runs, paired, decode_shares = _measure(jpegs, pattern, args)
    rows = _rows(runs, paired, decode_shares, args)
    steal, total = (end - begin for end, begin in zip(cpu_steal_ticks(), steal_start, strict=False))
    # steal: time the hypervisor ran other guests while this VM had work, a source of noise
    steal_percent = 100 * steal / max(1, total)
    print(f"\ntotal {time.perf_counter() - start:.0f} s, CPU steal {steal_percent:.1f}%")
    return {"images": {"count": args.num_images, "width": WIDTH, "height": HEIGHT, "format": "JPEG q90",
                       "mean_kib": round(statistics.mean(map(len, jpegs)) / 1024, 1), "shards": NUM_SHARDS},
            "batch_size": args.batch_size, "shuffle_buffer": args.shuffle_buffer,
            "images_timed": args.num_samples, "repeats": args.repeats, "cpu_steal_percent": round(steal_percent, 2),
            "rows": rows}


def _measure(jpegs: list[bytes], pattern: str, args: argparse.Namespace) -> tuple[dict, dict, dict]:
    """Every row's (images/s, CPU ms/img) per round, and the loader rows' paired ratios and decode shares.

    Every ratio pairs a loader run with raw runs of the same round ("vs raw xN": the mean of the
    raw xN runs just before and after its timed window): the speed of shared machines drifts by
    tens of percent within minutes, which pairing cancels.
    """
    runs: dict[tuple[int, str | int], list[tuple[float, float]]] = {}
    paired: dict[tuple[int, int], list[float]] = {}
    decode_shares: dict[tuple[int, int], list[float]] = {}
    for _ in range(args.repeats):
        for resolution in args.resolutions:
            runs.setdefault((resolution, "raw"), []).append(raw_rate(jpegs, resolution, args.num_samples))
            for workers in args.workers:
                processes = max(1, workers)
                reference = functools.partial(raw_rate, jpegs, resolution, args.num_samples // processes, processes)
                if workers > 1:
                    runs.setdefault((resolution, f"raw x{workers}"), []).append(reference())
                rate, cpu, reference_rate, share = loader_rate(
                    pattern, resolution, workers, args.batch_size, args.num_samples, args.shuffle_buffer, reference)
                runs.setdefault((resolution, workers), []).append((rate, cpu))
                paired.setdefault((resolution, workers), []).append(rate / reference_rate)
                decode_shares.setdefault((resolution, workers), []).append(share)
    return runs, paired, decode_shares


def _rows(runs: dict, paired: dict, decode_shares: dict, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Print the table (medians over rounds) and return its rows."""
    print(f"{'resolution':>10} {'workers':>8} {'images/s':>9} {'ratio/worker':>13} {'vs raw xN':>10} "
          f"{'worst':>6} {'CPU ms/img':>11} {'CPU ratio':>10} {'decode share':>13}")
    median = statistics.median
    parallel = sorted({w for w in args.workers if w > 1})
    table = []
    for resolution in args.resolutions:
        raw = runs[resolution, "raw"]
        # (row, processes doing the decoding, the raw row that ran as many plain loops)
        rows = [("raw", 1, "raw"), *((f"raw x{p}", p, f"raw x{p}") for p in parallel),
                *((w, max(1, w), f"raw x{w}" if w > 1 else "raw") for w in args.workers)]
        for row, processes, raw_row in rows:
            here, reference = runs[resolution, row], runs[resolution, raw_row]
            per_worker = [rate / (raw_rate_ * processes) for (rate, _), (raw_rate_, _) in zip(here, raw, strict=False)]
            vs_parallel = paired.get((resolution, row)) or [
                rate / ref for (rate, _), (ref, _) in zip(here, reference, strict=False)]
            # CPU ms/img sums all processes; "CPU ratio" is raw's CPU per image over the row's
            cpu_ratio = [raw_cpu / cpu for (_, cpu), (_, raw_cpu) in zip(here, raw, strict=False)]
            share = decode_shares.get((resolution, row))
            figures = {"resolution": resolution, "workers": row, "images_per_s": median(r for r, _ in here),
                       "ratio_per_worker": median(per_worker), "vs_raw_xN": median(vs_parallel),
                       "vs_raw_xN_worst": min(vs_parallel), "cpu_ms_per_image": median(c for _, c in here),
                       "cpu_ratio": median(cpu_ratio), "decode_share": median(share) if share else None}
            table.append(figures)
            shares = f"{figures['decode_share']:.3f}" if share else "-"
            print(f"{resolution:>10} {row:>8} {figures['images_per_s']:>9.1f} {figures['ratio_per_worker']:>13.2f} "
                  f"{figures['vs_raw_xN']:>10.2f} {figures['vs_raw_xN_worst']:>6.2f} "
                  f"{figures['cpu_ms_per_image']:>11.2f} {figures['cpu_ratio']:>10.2f} {shares:>13}")
    return table
