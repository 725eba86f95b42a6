"""WebDataset image-text loader that fits MMEngine's train loops (see build_wds_dataloader)."""
from __future__ import annotations

import functools
import glob
import io
import itertools
import json
import logging
import math
import multiprocessing
import os
import random
import re
import tarfile
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import braceexpand
import numpy as np
import torch
import webdataset as wds
from PIL import Image, ImageOps
from torch.utils.data import DataLoader, IterableDataset, default_collate, get_worker_info
from webdataset.tariterators import base_plus_ext, group_by_keys, tar_file_expander, url_opener

from .tar_reader import BLOCK, TarFormatError, is_plain_tar, iter_tar_samples
from .transforms import ImageTransform

logger = logging.getLogger(__name__)

# Units: missing_shard counts shard reads; every other kind counts samples (tar_error: see
# WebImageTextDataset._shard_failed for how samples lost with a shard are counted).
SKIP_KINDS = (
    "missing_shard", "tar_error", "json_error", "missing_image", "missing_caption", "empty_caption",
    "filtered_min_size", "filtered_pwatermark", "filtered_punsafe", "filtered_aspect_ratio",
    "filtered_caption_length", "decode_error",
)
_KIND_INDEX = {kind: i for i, kind in enumerate(SKIP_KINDS)}
_REMOTE = re.compile(r"^(pipe:|[a-zA-Z][a-zA-Z0-9+.-]*://)")
# How many samples the builder counts, at most, to tell whether a given num_samples_per_epoch
# exceeds what the shards hold (their tar headers are read: ~10 us a sample with a warm cache).
_CHECK_SAMPLES = 10_000


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


@dataclass(frozen=True)
class MetadataFilter:
    """LAION-style filters on a sample's json metadata; a missing field passes its filter."""

    min_original_size: int | None = None
    max_pwatermark: float | None = None
    max_punsafe: float | None = None
    aspect_ratio_range: tuple[float, float] | None = None
    min_caption_length: int = 1

    def reason(self, meta: dict[str, Any], caption: str) -> str | None:
        """Name of the first filter the sample fails, or None when it passes all."""
        width = _number(meta, "original_width", "width")
        height = _number(meta, "original_height", "height")
        if self.min_original_size is not None and any(
                side is not None and side < self.min_original_size for side in (width, height)):
            return "min_size"
        if self.max_pwatermark is not None and (_number(meta, "pwatermark") or 0.0) > self.max_pwatermark:
            return "pwatermark"
        if self.max_punsafe is not None and (_number(meta, "punsafe") or 0.0) > self.max_punsafe:
            return "punsafe"
        if self.aspect_ratio_range is not None and width and height:
            low, high = self.aspect_ratio_range
            if not low <= width / height <= high:
                return "aspect_ratio"
        if len(caption) < self.min_caption_length:
            return "caption_length"
        return None


def _number(meta: dict[str, Any], *names: str) -> float | None:
    """First of `names` holding a real number in `meta` (img2dataset writes null for unknowns)."""
    for name in names:
        value = meta.get(name)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    return None


class _TarTail:
    """Read-through proxy that remembers a tar stream's first and last block.

    Python's tarfile treats a file cut inside a member header as a normal end of archive; an
    uncompressed tar that really ended has zero blocks at its end, which this tells apart.
    """

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.head = b""
        self.tail = b""

    def read(self, size: int = -1) -> bytes:
        data = self.stream.read(size)
        if len(self.head) < BLOCK:
            self.head += data[:BLOCK - len(self.head)]
        if len(data) >= BLOCK:
            self.tail = data[-BLOCK:]
        elif data:
            self.tail = (self.tail + data)[-BLOCK:]
        return data

    def close(self) -> None:
        self.stream.close()

    @property
    def truncated(self) -> bool:
        plain_tar = self.head[257:262] == b"ustar"  # compressed shards have no checkable tail
        return plain_tar and self.tail != bytes(BLOCK)


def _rng(*parts: object) -> random.Random:
    """A Random seeded from `parts`: identical in every process and independent of PYTHONHASHSEED."""
    return random.Random(":".join(map(str, parts)))


def _worker_info() -> tuple[int, int]:
    info = get_worker_info()
    return (0, 1) if info is None else (info.id, info.num_workers)


def _mix(streams: list[Iterator[dict]], weights: Sequence[float], rng: random.Random) -> Iterator[dict]:
    """Draw from streams by weight (a seeded wds.RandomMix); stop when the drawn one is exhausted."""
    indices = range(len(streams))
    while True:
        sample = next(streams[rng.choices(indices, weights=weights)[0]], None)
        if sample is None:
            return
        yield sample


def _can_write_shared() -> bool:
    """Linux, and torch passes tensors between processes as file descriptors (its default there)."""
    return (hasattr(os, "memfd_create") and hasattr(torch.UntypedStorage, "_new_shared_fd_cpu")
            and torch.multiprocessing.get_sharing_strategy() == "file_descriptor")


def _stack_into_memfd(images: list[torch.Tensor]) -> torch.Tensor:
    """Stack same-shape contiguous images into a new shared-memory tensor, written as a memfd file.

    The batch must reach the main process through shared memory. default_collate stacks into
    torch's shared memory, whose pages then fault in one at a time on the first write, ~0.1 ms
    per 256-px image on a VM; a write allocates and fills them in the kernel at once.
    """
    size = sum(image.nbytes for image in images)
    fd = os.memfd_create("diffengine-batch", os.MFD_CLOEXEC)
    try:
        for image in images:
            data = memoryview(image.numpy()).cast("B")
            while data:  # one write moves at most ~2 GiB
                data = data[os.write(fd, data):]
        storage = torch.UntypedStorage._new_shared_fd_cpu(fd, size)  # maps a duplicate of fd
    finally:
        os.close(fd)
    return torch.empty(0, dtype=images[0].dtype).set_(storage).view(len(images), *images[0].shape)


def collate_batch(samples: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Stack samples into the batch layout the models consume; no other key passes through."""
    images = [s["pixel_values"] for s in samples]
    if get_worker_info() is None:
        # numpy's stack is single-threaded: torch.stack's intra-op threads stall on a busy core
        pixels = torch.from_numpy(np.stack([image.numpy() for image in images]))
    elif _can_write_shared():
        pixels = _stack_into_memfd(images)
    else:
        pixels = default_collate(images)  # stacks straight into shared memory
    return {
        "inputs": {"pixel_values": pixels,
                   "text": [s["text"] for s in samples]},
        # where this batch leaves its worker slot's stream, for resume_from
        "data_samples": {"keys": [s["__key__"] for s in samples],
                         "stream_position": samples[-1]["__position__"]},
    }


class WebImageTextDataset(IterableDataset):
    """Image-caption samples from webdataset shards; iterate it through build_wds_dataloader."""

    def __init__(self, sources: list[list[str]], weights: Sequence[float] | None, batches_per_rank: int,
                 batch_size: int, rank: int, world_size: int, num_workers: int, resampled: bool,
                 seed: int, shuffle_buffer: int, transform: ImageTransform, image_keys: Sequence[str],
                 caption_key: str, caption_json_fields: Sequence[str], metadata_filter: MetadataFilter,
                 shard_sizes: Sequence[float | None] | None = None, repeats_expected: bool = False) -> None:
        super().__init__()
        self.sources = sources
        self.weights = weights
        self.batches_per_rank = batches_per_rank
        self.batch_size = batch_size
        self.rank = rank
        self.world_size = world_size
        self.resampled = resampled
        self.seed = seed
        self.shuffle_buffer = shuffle_buffer
        self.transform = transform
        self.image_keys = tuple(image_keys)
        self.caption_key = caption_key
        self.caption_json_fields = tuple(caption_json_fields)
        self.metadata_filter = metadata_filter
        self.counter = SkipCounter(num_workers)
        self.messages = WorkerMessages()
        # Mean samples per shard of each source as counted from tar headers (None: not counted),
        # to estimate how many samples a shard that breaks off takes with it.
        self.shard_sizes = list(shard_sizes) if shard_sizes is not None else [None] * len(sources)
        # The builder warned that an epoch takes more samples than the shards hold: then every
        # pass runs out, and saying so again at each one would add nothing.
        self.repeats_expected = repeats_expected
        # Shared so that persistent workers see an epoch set after they were started.
        self._epoch = multiprocessing.RawValue("q", 0)
        # Where resume_from asks the next pass to start: [epoch (-1: none), batches trained,
        # then the stream position of each worker slot].
        self._slots = max(1, num_workers)
        self._resume = multiprocessing.RawArray("q", [-1, 0] + [0] * self._slots)
        self._all_urls = frozenset(itertools.chain.from_iterable(sources))

    @property
    def epoch(self) -> int:
        """Epoch that the next iteration (a new iter() of the DataLoader) will use."""
        return self._epoch.value

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch that seeds shard order, sample shuffle and augmentation of the next pass."""
        self._epoch.value = epoch

    def resume_from(self, epoch: int, batches_trained: int, positions: Sequence[int]) -> None:
        """Make passes over `epoch` continue after its first `batches_trained` batches, undecoded.

        ``positions[slot]`` is the ``data_samples["stream_position"]`` of the last trained batch
        of each worker slot (0 for a slot that delivered none). Each slot then fast-forwards its
        stream by that many parsed samples without decoding them, and the DataLoader's worker 0
        plays the slot whose batch is due next, so the batches that follow are exactly those of
        an uninterrupted pass.
        """
        if len(positions) != self._slots:
            raise ValueError(f"{len(positions)} stream positions for {self._slots} worker slot(s)")
        if not 0 <= batches_trained < self.batches_per_rank:
            raise ValueError(f"batches_trained must be in [0, {self.batches_per_rank}), "
                             f"got {batches_trained}")
        self._resume[:] = [epoch, batches_trained, *positions]

    @property
    def metainfo(self) -> dict[str, Any]:
        """Dataset description that MMEngine's loops hand to the visualizer."""
        return {"num_shards": len(self._all_urls), "resampled": self.resampled,
                "resolution": self.transform.resolution}

    @property
    def skip_counts(self) -> dict[str, int]:
        """Skipped items by kind, summed over this process's DataLoader workers."""
        return self.counter.totals()

    def take_messages(self) -> tuple[list[str], int]:
        """Messages for the log (failing shards, refilled epochs) since the last call, and how many missed."""
        return self.messages.take()

    def __len__(self) -> int:
        """Nominal samples per rank and epoch (DataLoader divides it by batch_size)."""
        return self.batches_per_rank * self.batch_size

    def __iter__(self) -> Iterator[dict[str, Any]]:
        worker, num_workers = _worker_info()
        epoch = self.epoch
        trained, skip = 0, 0
        if self._resume[0] == epoch:
            trained = self._resume[1]
            # The DataLoader asks its worker 0 first: it takes over the slot whose batch is due.
            worker = (worker + trained) % num_workers
            skip = self._resume[2 + worker]
        # Whole batches per worker slot, dealt round-robin as the DataLoader collects them, so
        # that every rank yields exactly batches_per_rank batches.
        quota = (_share(self.batches_per_rank, num_workers, worker)
                 - _share(trained, num_workers, worker)) * self.batch_size
        produced = 0
        position = 0  # parsed samples of this slot's stream so far (this epoch)
        visited: set[str] = set()  # shards opened since the last usable sample
        skipped = self.counter.local_total()
        for pass_index in itertools.count():
            if produced >= quota:
                return
            if pass_index == 1 and not self.resampled and not self.repeats_expected:
                # The first pass read each of this slot's shards once: what it gave is all there
                # is, and the rest of the epoch repeats it (resampled passes repeat by design).
                wanted = _share(self.batches_per_rank, num_workers, worker) * self.batch_size
                message = (f"epoch {epoch}, rank {self.rank}, worker {worker}: a pass over its shards gave "
                           f"{produced + min(skip, position)} distinct usable samples "
                           f"({self.counter.local_total() - skipped} skipped) of the {wanted} the epoch "
                           "takes from it: re-reading them, so samples repeat within the epoch")
                logger.warning(message)
                self.messages.put(message)
            for item in self._pass(epoch, pass_index, worker, num_workers, visited):
                position += 1
                if position <= skip:  # trained before a resume: fast-forwarded, never decoded
                    visited.clear()
                    continue
                # Seeded by the position, so augmentation does not depend on what was skipped.
                sample = self._decode(item, _rng("augment", self.seed, epoch, self.rank, worker, position))
                if sample is None:
                    continue
                visited.clear()
                sample["__position__"] = position
                yield sample
                produced += 1
                if produced >= quota:
                    return
            # Each pass reshuffles (or redraws) shards, so an empty pass only proves there is no
            # usable sample once every shard has been read since the last sample.
            if visited >= self._all_urls:
                counts = {k: v for k, v in self.skip_counts.items() if v}
                raise RuntimeError(
                    f"no usable sample in {len(self._all_urls)} shard(s) (rank {self.rank}, worker "
                    f"{worker}), e.g. {sorted(self._all_urls)[0]!r}; skipped so far: {counts}")

    def _pass(self, epoch: int, pass_index: int, worker: int, num_workers: int,
              visited: set[str]) -> Iterator[dict[str, Any]]:
        """One pass over each source's shards for this rank and worker, mixed by weight."""
        streams = [self._source_pass(i, urls, epoch, pass_index, worker, num_workers, visited)
                   for i, urls in enumerate(self.sources)]
        if len(streams) == 1:
            return streams[0]
        return _mix(streams, self.weights, _rng("mix", self.seed, epoch, pass_index, self.rank, worker))

    def _source_pass(self, source: int, urls: list[str], epoch: int, pass_index: int, worker: int,
                     num_workers: int, visited: set[str]) -> Iterator[dict[str, Any]]:
        here = (self.seed, source, epoch, pass_index, self.rank, worker)  # seeds this worker's streams
        if self.resampled:
            shard_rng = _rng("resample", *here)
            # A finite draw (10 per shard) bounds a pass, so a stream without usable data can end.
            shards: Any = functools.partial(_draw_shards, urls, shard_rng, 10 * len(urls))
        else:
            # Same order on every rank (no rank/worker in the seed), then disjoint slices.
            shards = wds.SimpleShardList(urls, seed=f"order:{self.seed}:{source}:{epoch}:{pass_index}")
        stages: list[Any] = [shards]
        if not self.resampled:
            stages.append(functools.partial(_every, start=self.rank * num_workers + worker,
                                            step=self.world_size * num_workers))
        stages.append(functools.partial(self._tar_samples, visited=visited,
                                        shard_size=self.shard_sizes[source]))
        if self.shuffle_buffer > 0:
            stages.append(wds.shuffle(self.shuffle_buffer, rng=_rng("shuffle", *here)))
        stages.append(wds.map(self._parse))  # metadata filters: decoding comes later, in __iter__
        return iter(wds.DataPipeline(*stages))

    def _tar_samples(self, shards: Iterator[dict], visited: set[str],
                     shard_size: float | None) -> Iterator[dict[str, Any]]:
        """The samples of each shard in turn, counting what each unreadable, cut or missing shard loses."""
        for shard in shards:
            visited.add(shard["url"])
            if _REMOTE.match(shard["url"]):
                yield from self._webdataset_samples(shard["url"], shard_size)
            else:
                yield from self._local_samples(shard["url"], shard_size)

    def _local_samples(self, path: str, shard_size: float | None) -> Iterator[dict[str, Any]]:
        """A local shard through the fast ustar reader, or through webdataset if it is not one."""
        seen = 0  # samples read or dropped so far

        def dropped(count: int, reason: str) -> None:  # corrupt regions, read past
            nonlocal seen
            seen += count
            self._shard_failed("tar_error", path, reason, count)

        try:
            with open(path, "rb") as stream:
                if is_plain_tar(stream):
                    for sample in iter_tar_samples(stream, path, on_dropped=dropped):
                        seen += 1
                        yield sample
                    return
        except FileNotFoundError as exn:
            self._shard_failed("missing_shard", path, repr(exn))
            return
        except TarFormatError as exn:  # a cut, or a duplicate name (which loses no sample)
            rest = _lost_with_rest(shard_size, seen) if exn.rest_unread else 0
            self._shard_failed("tar_error", path, str(exn), rest, estimated=exn.rest_unread)
            return
        except OSError as exn:
            rest = _lost_with_rest(shard_size, seen)
            self._shard_failed("tar_error", path, repr(exn), rest, estimated=True)
            return
        yield from self._webdataset_samples(path, shard_size)  # compressed or pre-POSIX tar, or not a tar

    def _webdataset_samples(self, url: str, shard_size: float | None) -> Iterator[dict[str, Any]]:
        """wds.tarfile_to_samples of one shard, counting a shard that fails or is cut once it is read.

        tarfile cannot read past a corrupt header: whatever breaks a shard here ends it, and the
        samples lost with its rest are estimated (_lost_with_rest).
        """
        errors: list[Exception] = []

        def handler(exn: Exception) -> bool:
            errors.append(exn)
            return True

        tails: list[_TarTail] = []
        read = 0
        opened = _tailed(url_opener([{"url": url}], handler=handler), tails, errors)
        for sample in group_by_keys(tar_file_expander(opened, handler=handler), handler=handler):
            read += 1
            yield sample
        truncated = any(tail.truncated for tail in tails)
        if not errors and not truncated:
            return
        detail = repr(errors[0]) if errors else "truncated tar"
        if not tails and isinstance(errors[0], FileNotFoundError):
            self._shard_failed("missing_shard", url, detail)
        else:
            self._shard_failed("tar_error", url, detail, _lost_with_rest(shard_size, read), estimated=True)

    def _shard_failed(self, kind: str, url: str, reason: str, lost: int = 1, estimated: bool = False) -> None:
        """Count a failing shard (missing_shard: once; tar_error: `lost` samples); report it for the log.

        tar_error counts the samples dropped around each corrupt region of a plain tar as it is
        read past (see tar_reader.iter_tar_samples), and where a shard broke off, an estimate of
        the samples that followed (_lost_with_rest); a duplicate file name loses none but is
        still reported.
        """
        self.counter.add(kind, f"{url}: {reason}", lost)
        if kind == "missing_shard":
            self.messages.put(f"shard {url}: missing ({reason})")
        else:
            note = " (estimated: the rest of the shard could not be read)" if estimated else ""
            self.messages.put(f"shard {url}: {kind}, {lost} sample(s) lost{note}: {reason}")

    def _parse(self, sample: dict[str, Any]) -> dict[str, Any] | None:
        """Pick image bytes and caption and apply the metadata filters; None skips the sample."""
        key = f"{sample['__key__']} in {sample.get('__url__')}"
        image = next((sample[ext] for ext in self.image_keys if ext in sample), None)
        if image is None:
            return self._skip("missing_image", key)
        meta: Any = {}
        if "json" in sample:
            try:
                meta = json.loads(sample["json"])
            except ValueError:
                meta = None
            if not isinstance(meta, dict):
                return self._skip("json_error", key)
        caption = self._caption(sample, meta)
        if caption is None:
            return self._skip("missing_caption", key)
        if not caption:
            return self._skip("empty_caption", key)
        reason = self.metadata_filter.reason(meta, caption)
        if reason is not None:
            return self._skip(f"filtered_{reason}", key)
        return {"image": image, "text": caption, "where": key}

    def _caption(self, sample: dict[str, Any], meta: dict[str, Any]) -> str | None:
        """Caption file first, then json fields; "" when all present ones are blank, None when none is."""
        candidates = [meta[f] for f in self.caption_json_fields if isinstance(meta.get(f), str)]
        if self.caption_key in sample:
            candidates.insert(0, sample[self.caption_key].decode("utf-8", errors="replace"))
        if not candidates:
            return None
        return next((c.strip() for c in candidates if c.strip()), "")

    def _decode(self, item: dict[str, Any], rng: random.Random) -> dict[str, Any] | None:
        """Decode and transform the image; None (counted) when the bytes are not a readable image."""
        size = self.transform.resolution
        try:
            with Image.open(io.BytesIO(item["image"])) as image:
                image.draft(None, (size, size))  # JPEG: decode at a reduced scale still >= size
                ImageOps.exif_transpose(image, in_place=True)  # in place: no copy when upright
                pixel_values = self.transform(image, rng)
        except Exception as exn:  # noqa: BLE001 - PIL signals bad data with many exception types
            return self._skip("decode_error", f"{item['where']}: {exn!r}")
        return {"pixel_values": pixel_values, "text": item["text"], "__key__": item["__key__"]}

    def _skip(self, kind: str, detail: str) -> None:
        self.counter.add(kind, detail)
        return None


def _tailed(sources: Iterator[dict], tails: list[_TarTail], errors: list[Exception]) -> Iterator[dict]:
    """Opened shards with their stream wrapped in a _TarTail (kept in `tails`), each closed once consumed."""
    for source in sources:
        tail = source["stream"] = _TarTail(source["stream"])
        tails.append(tail)
        try:
            yield source
        finally:
            try:
                tail.close()
            except OSError as exn:  # e.g. a pipe: command that exited with an error status
                errors.append(exn)


def _lost_with_rest(shard_size: float | None, seen: int) -> int:
    """Samples counted lost when a shard breaks off after `seen` of its samples were read or dropped.

    How many followed cannot be known. Estimated as the mean size of the shards of its source
    that the builder counted from tar headers without error, less those seen, and at least one;
    one where none was counted (remote shards).
    """
    return 1 if shard_size is None else max(1, round(shard_size - seen))


def _share(batches: int, num_workers: int, worker: int) -> int:
    """How many of the first `batches` batches worker slot `worker` delivers (round-robin)."""
    return batches // num_workers + (worker < batches % num_workers)


def _draw_shards(urls: list[str], rng: random.Random, count: int) -> Iterator[dict[str, str]]:
    """Shards drawn with replacement (wds.ResampledShards with an explicit, reproducible seed)."""
    for _ in range(count):
        yield {"url": rng.choice(urls)}


def _every(source: Iterator[dict], start: int, step: int) -> Iterator[dict]:
    """This rank-and-worker slot's share of the shards (split_by_node then split_by_worker)."""
    return itertools.islice(source, start, None, step)


def expand_shards(spec: str | Sequence[str]) -> list[str]:
    """Expand brace patterns and globs of local shard specs; remote and pipe: specs only brace-expand."""
    if not isinstance(spec, str):
        return [url for item in spec for url in expand_shards(item)]
    if _REMOTE.match(spec) and not spec.startswith("file://"):
        return list(braceexpand.braceexpand(spec))
    pattern = os.path.expanduser(re.sub(r"^file:(//)?", "", spec))
    found, missing = [], []
    for path in braceexpand.braceexpand(pattern):
        if glob.has_magic(path):
            found.extend(sorted(glob.glob(path)))
        elif os.path.isfile(path):
            found.append(path)
        else:
            missing.append(path)
    if not found:
        raise FileNotFoundError(f"shard spec {spec!r} matches no file")
    if missing:
        logger.warning("shard spec %r: %d listed file(s) missing, e.g. %s", spec, len(missing), missing[0])
    return found


def _count_samples(urls: list[str], image_keys: Sequence[str],
                   stop_above: float = math.inf) -> list[tuple[int, bool]]:
    """(samples with an image, read without error) of local shards in order, from tar headers only.

    No data is read. Stops after the shard that brings the total above `stop_above`.
    """
    counts, total = [], 0
    for url in urls:
        if _REMOTE.match(url):
            raise ValueError(f"num_samples_per_epoch is required for remote shards such as {url!r}")
        keys = set()
        clean = True
        try:
            keys.update(_image_keys(url, image_keys))
        except (OSError, EOFError, zlib.error, tarfile.TarError, TarFormatError):
            clean = False  # counted as tar_error when the loader reads the shard
        counts.append((len(keys), clean))
        total += len(keys)
        if total > stop_above:
            break
    return counts


def _mean_clean(counts: list[tuple[int, bool]] | None) -> float | None:
    """Mean samples per shard of the shards counted without error (None: none was)."""
    clean = [count for count, ok in counts or () if ok]
    return sum(clean) / len(clean) if clean else None


def _repeat_warnings(specs: list[Any], held: list[int | None], shares: list[float], epoch: str,
                     epoch_samples: int) -> list[str]:
    """A warning for each source whose share of an epoch is more samples than its shards hold."""
    warnings = []
    for spec, samples, share in zip(specs, held, shares):
        draws = share * epoch_samples
        if samples is None or draws <= samples:
            continue
        where = ("the shards" if len(specs) == 1
                 else f"~{draws:.0f} from {spec!r} (weight {share:.0%}), whose shards")
        seen = f"each is seen ~{draws / samples:.3g} times per epoch" if samples else "none can be read"
        warnings.append(f"{epoch} but {where} hold {samples} samples with an image: {seen}")
    return warnings


def _image_keys(path: str, image_keys: Sequence[str]) -> Iterator[str]:
    """Keys of a local tar's samples with an image, from headers only (as the loader groups them)."""
    with open(path, "rb") as stream:
        if is_plain_tar(stream):
            # the fast reader's samples: those it drops around a corrupt header are not counted
            for sample in iter_tar_samples(stream, path, read_data=False):
                if any(ext in sample for ext in image_keys):
                    yield sample["__key__"]
            return
    with tarfile.open(path) as tar:
        for member in tar:
            key, ext = base_plus_ext(member.name)
            if member.isreg() and key is not None and ext.lower() in image_keys:
                yield key


def _dist_info(rank: int | None, world_size: int | None) -> tuple[int, int]:
    """Explicit values, else torch.distributed when initialised, else env RANK/WORLD_SIZE, else 0/1."""
    if (rank is None) != (world_size is None):
        raise ValueError("pass both rank and world_size, or neither")
    if rank is None:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            rank, world_size = torch.distributed.get_rank(), torch.distributed.get_world_size()
        else:
            rank, world_size = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")
    return rank, world_size


def build_wds_dataloader(
    shards: str | Sequence[str] | Sequence[str | Sequence[str]],
    batch_size: int,
    resolution: int,
    num_samples_per_epoch: int | None = None,
    num_workers: int = 2,
    resampled: bool = False,
    seed: int = 0,
    shuffle_buffer: int = 1000,
    center_crop: bool = True,
    random_flip: bool = True,
    image_keys: str = "jpg;jpeg;png;webp",
    caption_key: str = "txt",
    caption_json_fields: Sequence[str] = ("caption", "text"),
    min_original_size: int | None = None,
    max_pwatermark: float | None = None,
    max_punsafe: float | None = None,
    aspect_ratio_range: Sequence[float] | None = None,
    min_caption_length: int = 1,
    persistent_workers: bool = False,
    pin_memory: bool = False,
    prefetch_factor: int | None = None,
    weights: Sequence[float] | None = None,
    rank: int | None = None,
    world_size: int | None = None,
) -> DataLoader:
    """Build a DataLoader of image-caption batches from webdataset shards.

    Batches are ``{"inputs": {"pixel_values": uint8[B, 3, R, R], "text": [str]},
    "data_samples": {"keys": [str], "stream_position": int}}``. ``len(loader)`` is the per-rank
    number of batches per epoch, ``num_samples_per_epoch // (world_size * batch_size)`` (at least
    1), and every rank yields exactly that many. When ``num_samples_per_epoch`` is None it is
    counted from the tar headers of local shards (remote or ``pipe:`` shards then raise ValueError).

    ``resampled=False`` reads each pass with a shard order seeded by (seed, epoch) identically on
    all ranks, each rank x worker taking a disjoint slice; it needs at least
    ``world_size * max(1, num_workers)`` shards per source (ValueError otherwise). ``resampled=True``
    draws shards with replacement, seeded by (seed, epoch, rank, worker). A pass that ends before
    the epoch does starts a reshuffled next pass. With ``weights``, ``shards`` is a list of sources
    mixed by those weights. ``rank``/``world_size`` default to torch.distributed, then the RANK and
    WORLD_SIZE environment variables.

    Epoch: ``loader.dataset.set_epoch(e)`` (aliased as ``loader.sampler.set_epoch``, which MMEngine's
    loops and DistSamplerSeedHook call) seeds the next ``iter(loader)``; it stays in effect until set
    again. ``loader.dataset.resume_from(epoch, batches_trained, positions)`` makes a pass over that
    epoch continue after its trained batches without decoding them (``positions`` from the batches'
    ``stream_position``, see ``WebImageTextDataset.resume_from``). Skipped data is counted by kind
    (``SKIP_KINDS``) in ``get_skip_counts(loader)``, summed over this process's workers through
    shared memory; only a stream in which no shard yields a usable sample raises RuntimeError.
    Each failing shard (with its reason and the samples it lost) and each pass that runs out
    before its share of an epoch are also put in ``loader.dataset.take_messages()``, which
    DataSkipLogHook writes to the work dir's log. An epoch that takes more samples than the
    shards hold is logged as a warning here (local shards, counted from their tar headers; with
    ``num_samples_per_epoch`` given, only as far as ``_CHECK_SAMPLES``).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    rank, world_size = _dist_info(rank, world_size)
    if weights is None:
        source_specs: list[Any] = [shards]
    elif isinstance(shards, str) or len(shards) != len(weights) or min(weights) < 0 or sum(weights) <= 0:
        raise ValueError("weights needs shards as a list of sources of the same length, "
                         "with non-negative weights that do not all vanish")
    else:
        source_specs = list(shards)
    sources = [expand_shards(spec) for spec in source_specs]
    slots = world_size * max(1, num_workers)
    for spec, urls in zip(source_specs, sources):
        if not urls:
            raise FileNotFoundError(f"shard spec {spec!r} lists no shard")
        if not resampled and len(urls) < slots:
            raise ValueError(
                f"shards {spec!r}: {len(urls)} shard(s) cannot give each of world_size x num_workers = "
                f"{slots} readers its own shards; add shards, lower num_workers or use resampled=True")
    keys = [k.strip().lower() for k in image_keys.split(";") if k.strip()]
    shares = [1.0] if weights is None else [weight / sum(weights) for weight in weights]
    given = num_samples_per_epoch is not None
    if not given:
        counted: list[list[tuple[int, bool]] | None] = [_count_samples(urls, keys) for urls in sources]
        num_samples_per_epoch = sum(count for counts in counted for count, _ in counts)
        if num_samples_per_epoch == 0:
            raise RuntimeError(f"no usable sample: no shard of {shards!r} holds a {'/'.join(keys)} file")
    batches_per_rank = max(1, num_samples_per_epoch // (world_size * batch_size))
    epoch_samples = batches_per_rank * batch_size * world_size
    if given:
        # Counted only as far as an epoch's share and _CHECK_SAMPLES: a large dataset is not
        # scanned at the start for a check that its size makes moot (each pass still reports
        # running out, see WebImageTextDataset.__iter__).
        counted = [None if any(_REMOTE.match(url) for url in urls)
                   else _count_samples(urls, keys, min(share * epoch_samples, _CHECK_SAMPLES))
                   for urls, share in zip(sources, shares)]
    epoch = f"num_samples_per_epoch={num_samples_per_epoch}{'' if given else ' (counted)'}"
    if epoch_samples != num_samples_per_epoch:
        epoch += (f" (an epoch is {batches_per_rank} batch(es) of {batch_size} on each of {world_size} "
                  f"rank(s): {epoch_samples} samples)")
    held = [sum(count for count, _ in counts) if counts is not None and len(counts) == len(urls) else None
            for counts, urls in zip(counted, sources)]
    warnings = _repeat_warnings(source_specs, held, shares, epoch, epoch_samples)
    if warnings:
        from mmengine.logging import print_log  # ~0.3 s to import: only when there is a warning

        for warning in warnings:
            print_log(warning, logger="current", level=logging.WARNING)
    metadata_filter = MetadataFilter(
        min_original_size, max_pwatermark, max_punsafe,
        tuple(aspect_ratio_range) if aspect_ratio_range is not None else None, min_caption_length)
    dataset = WebImageTextDataset(
        sources, weights, batches_per_rank, batch_size, rank, world_size, num_workers, resampled, seed,
        shuffle_buffer, ImageTransform(resolution, center_crop, random_flip), keys, caption_key,
        caption_json_fields, metadata_filter, [_mean_clean(counts) for counts in counted], bool(warnings))
    loader = DataLoader(
        dataset, batch_size=batch_size, collate_fn=collate_batch, num_workers=num_workers,
        pin_memory=pin_memory, persistent_workers=persistent_workers and num_workers > 0,
        prefetch_factor=prefetch_factor if num_workers > 0 else None)
    # An IterableDataset's DataLoader owns a sampler-less _InfiniteConstantSampler; giving it
    # set_epoch lets MMEngine's epoch propagation reach the dataset.
    loader.sampler.set_epoch = dataset.set_epoch
    return loader


def get_skip_counts(loader: DataLoader | WebImageTextDataset) -> dict[str, int]:
    """Skip counts by kind for a loader from build_wds_dataloader (or its dataset)."""
    return getattr(loader, "dataset", loader).skip_counts
