"""Accounting for skipped data across DataLoader workers: counts by kind and messages for the log."""
from __future__ import annotations

import logging
import multiprocessing
from typing import TYPE_CHECKING

from torch.utils.data import DataLoader, get_worker_info

if TYPE_CHECKING:
    from .wds_dataset import WebImageTextDataset

logger = logging.getLogger(__name__)

# Units: missing_shard counts shard reads; every other kind counts samples (tar_error: see
# ShardReader._shard_failed for how samples lost with a shard are counted).
SKIP_KINDS = (
    "missing_shard", "tar_error", "json_error", "missing_image", "missing_caption", "empty_caption",
    "filtered_min_size", "filtered_pwatermark", "filtered_punsafe", "filtered_aspect_ratio",
    "filtered_caption_length", "decode_error",
)
_KIND_INDEX = {kind: i for i, kind in enumerate(SKIP_KINDS)}


class SkipCounter:
    """Per-process skip counts by kind, in shared memory with one row per DataLoader worker."""

    def __init__(self, num_workers: int) -> None:
        # Workers are separate processes: a shared array lets the main process read their counts
        # at any time (also when a worker dies with the "no usable sample" error).
        self._rows = num_workers + 1
        self._values = multiprocessing.RawArray("q", self._rows * len(SKIP_KINDS))
        self._warned: set[str] = set()

    def _row(self) -> int:
        info = get_worker_info()
        return 0 if info is None else (info.id + 1) % self._rows  # row 0: iteration in this process

    def add(self, kind: str, detail: str, count: int = 1) -> None:
        """Count `count` skipped items; log the first event of each kind in this process as a warning."""
        self._values[self._row() * len(SKIP_KINDS) + _KIND_INDEX[kind]] += count
        level = logging.DEBUG if kind in self._warned else logging.WARNING
        self._warned.add(kind)
        logger.log(level, "skipped (%s): %s", kind, detail)

    def local_total(self) -> int:
        """Items skipped so far by this process (this DataLoader worker), all kinds together."""
        start = self._row() * len(SKIP_KINDS)
        return sum(self._values[start:start + len(SKIP_KINDS)])

    def totals(self) -> dict[str, int]:
        """Counts summed over workers, for every kind."""
        width = len(SKIP_KINDS)
        return {kind: sum(self._values[row * width + i] for row in range(self._rows))
                for i, kind in enumerate(SKIP_KINDS)}


class WorkerMessages:
    """Messages for the main process's log, from any process, in a ring of shared-memory slots.

    DataLoader workers are separate processes whose logging reaches only their own stderr, not
    the work dir's log. A message put here is written, under a lock, into the next of `slots`
    fixed-size slots (longer ones are cut); the main process takes those written since it last
    took (DataSkipLogHook logs them). Nothing blocks or grows when nobody takes: past `slots`
    untaken messages the oldest are overwritten, and the next take says how many were missed.
    """

    def __init__(self, slots: int = 256, size: int = 512) -> None:
        self._slots, self._size = slots, size
        self._lock = multiprocessing.Lock()
        self._written = multiprocessing.RawValue("q", 0)
        self._buffer = multiprocessing.RawArray("c", slots * size)
        self._taken = 0  # meaningful in the main process only, the one that takes

    def put(self, message: str) -> None:
        """Write `message` into the next slot (dropped if the lock stays held, e.g. by a killed worker)."""
        data = message.encode("utf-8", "replace")[:self._size]
        if not self._lock.acquire(timeout=1):
            return
        try:
            slot = self._written.value % self._slots * self._size
            self._buffer[slot:slot + self._size] = data.ljust(self._size, b"\0")
            self._written.value += 1
        finally:
            self._lock.release()

    def take(self) -> tuple[list[str], int]:
        """Messages put since the last take, oldest first, and how many of them were overwritten."""
        if not self._lock.acquire(timeout=1):
            return [], 0
        try:
            written = self._written.value
            first = max(self._taken, written - self._slots)
            raw = [self._buffer[i % self._slots * self._size:(i % self._slots + 1) * self._size]
                   for i in range(first, written)]
        finally:
            self._lock.release()
        missed, self._taken = first - self._taken, written
        return [data.rstrip(b"\0").decode("utf-8", "replace") for data in raw], missed


def get_skip_counts(loader: DataLoader | WebImageTextDataset) -> dict[str, int]:
    """Skip counts by kind for a loader from build_wds_dataloader (or its dataset)."""
    return getattr(loader, "dataset", loader).skip_counts
