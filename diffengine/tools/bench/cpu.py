"""``bench cpu``: diffengine's real training iteration against the plain loop, in paired rounds.

Both sides train the demo's tiny models on the same batch, optimizer, learning rates and LoRA,
interleaved in one process (``PairedRounds``); then the time to the first iteration of
``diffengine wds_train lavi_bridge_demo`` (``startup``).
"""
from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .models import CONFIG_BY_SIZE, demo_models, model_kwargs_of, optimizer_settings_of, packaged_config
from .plain_loop import PlainLoop
from .startup import time_to_first_iteration

if TYPE_CHECKING:
    from torch.utils.data import DataLoader

REPEATED_BATCH_LOADER = "bench_repeated_batch_loader"  # its name in diffengine's FUNCTIONS registry
RATIO_GOAL = 1.05  # issue 12: diffengine's time per iteration at most 5 % above the plain loop's


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

    from ..demo_assets import demo_overrides

    cfg = packaged_config("tiny", *demo_overrides(t5_dir, sd_dir, shards),
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
        plain = PlainLoop(t5_dir, sd_dir, model_kwargs_of(cfg), *optimizer_settings_of(cfg))
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
