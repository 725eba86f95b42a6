"""WebDataset image-text loader that fits MMEngine's train loops (see build_wds_dataloader)."""
from __future__ import annotations

import functools
import glob
import io
import itertools
import json
import logging
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

from .tar_reader import BLOCK, TarFormatError, is_plain_tar, iter_tar_members, iter_tar_samples
from .transforms import ImageTransform

logger = logging.getLogger(__name__)

SKIP_KINDS = (
    "missing_shard", "tar_error", "json_error", "missing_image", "missing_caption", "empty_caption",
    "filtered_min_size", "filtered_pwatermark", "filtered_punsafe", "filtered_aspect_ratio",
    "filtered_caption_length", "decode_error",
)
_KIND_INDEX = {kind: i for i, kind in enumerate(SKIP_KINDS)}
_REMOTE = re.compile(r"^(pipe:|[a-zA-Z][a-zA-Z0-9+.-]*://)")


class SkipCounter:
    """Per-process skip counts by kind, in shared memory with one row per DataLoader worker."""

    def __init__(self, num_workers: int) -> None:
        # Workers are separate processes: a shared array lets the main process read their counts
        # at any time (also when a worker dies with the "no usable sample" error).
        self._rows = num_workers + 1
        self._values = multiprocessing.RawArray("q", self._rows * len(SKIP_KINDS))
        self._warned: set[str] = set()

    def add(self, kind: str, detail: str) -> None:
        """Count one skipped item; log the first of each kind in this process as a warning."""
        info = get_worker_info()
        row = 0 if info is None else (info.id + 1) % self._rows  # row 0: iteration in this process
        self._values[row * len(SKIP_KINDS) + _KIND_INDEX[kind]] += 1
        level = logging.DEBUG if kind in self._warned else logging.WARNING
        self._warned.add(kind)
        logger.log(level, "skipped (%s): %s", kind, detail)

    def totals(self) -> dict[str, int]:
        """Counts summed over workers, for every kind."""
        width = len(SKIP_KINDS)
        return {kind: sum(self._values[row * width + i] for row in range(self._rows))
                for i, kind in enumerate(SKIP_KINDS)}


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
                 caption_key: str, caption_json_fields: Sequence[str], metadata_filter: MetadataFilter) -> None:
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
        for pass_index in itertools.count():
            if produced >= quota:
                return
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
        stages.append(functools.partial(self._tar_samples, visited=visited))
        if self.shuffle_buffer > 0:
            stages.append(wds.shuffle(self.shuffle_buffer, rng=_rng("shuffle", *here)))
        stages.append(wds.map(self._parse))  # metadata filters: decoding comes later, in __iter__
        return iter(wds.DataPipeline(*stages))

    def _tar_samples(self, shards: Iterator[dict], visited: set[str]) -> Iterator[dict[str, Any]]:
        """The samples of each shard in turn, counting each unreadable, cut or missing shard once."""
        for shard in shards:
            visited.add(shard["url"])
            if _REMOTE.match(shard["url"]):
                yield from self._webdataset_samples(shard["url"])
            else:
                yield from self._local_samples(shard["url"])

    def _local_samples(self, path: str) -> Iterator[dict[str, Any]]:
        """A local shard through the fast ustar reader, or through webdataset if it is not one."""
        try:
            with open(path, "rb") as stream:
                if is_plain_tar(stream):
                    yield from iter_tar_samples(stream, path)
                    return
        except FileNotFoundError as exn:
            self.counter.add("missing_shard", repr(exn))
            return
        except (OSError, TarFormatError) as exn:
            self.counter.add("tar_error", f"{path}: {exn!r}")
            return
        yield from self._webdataset_samples(path)  # compressed or pre-POSIX tar, or not a tar

    def _webdataset_samples(self, url: str) -> Iterator[dict[str, Any]]:
        """wds.tarfile_to_samples of one shard, counting a shard that fails or is cut."""
        errors: list[Exception] = []

        def handler(exn: Exception) -> bool:
            errors.append(exn)
            return True

        streams = self._checked(url_opener([{"url": url}], handler=handler), errors)
        yield from group_by_keys(tar_file_expander(streams, handler=handler), handler=handler)

    def _checked(self, streams: Iterator[dict], errors: list[Exception]) -> Iterator[dict]:
        """Wrap opened shards; once one is consumed, count it if reading it failed or it was cut."""
        done = 0
        for source in streams:
            done = self._count_open_errors(errors, done)  # shards that failed to open meanwhile
            tail = source["stream"] = _TarTail(source["stream"])
            try:
                yield source
            finally:
                try:
                    tail.close()
                except OSError as exn:  # e.g. a pipe: command that exited with an error status
                    errors.append(exn)
            if len(errors) > done or tail.truncated:
                detail = repr(errors[done]) if len(errors) > done else "truncated tar"
                self.counter.add("tar_error", f"{source['url']}: {detail}")
            done = len(errors)
        self._count_open_errors(errors, done)

    def _count_open_errors(self, errors: list[Exception], done: int) -> int:
        for exn in errors[done:]:
            self.counter.add("missing_shard" if isinstance(exn, FileNotFoundError) else "tar_error", repr(exn))
        return len(errors)

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


def _count_samples(urls: list[str], image_keys: Sequence[str]) -> int:
    """Samples with an image in local shards, from tar headers only (no data is read)."""
    total = 0
    for url in urls:
        if _REMOTE.match(url):
            raise ValueError(f"num_samples_per_epoch is required for remote shards such as {url!r}")
        keys = set()
        try:
            for name in _member_names(url):
                key, ext = base_plus_ext(name)
                if key is not None and ext.lower() in image_keys:
                    keys.add(key)
        except (OSError, EOFError, zlib.error, tarfile.TarError, TarFormatError):
            pass  # counted as tar_error when the loader reads the shard
        total += len(keys)
    return total


def _member_names(path: str) -> Iterator[str]:
    """Names of a local tar's files: the fast reader for plain tars, tarfile for compressed ones."""
    with open(path, "rb") as stream:
        if is_plain_tar(stream):
            yield from (name for name, _ in iter_tar_members(stream, read_data=False))
            return
    with tarfile.open(path) as tar:
        yield from (member.name for member in tar if member.isreg())


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
    if num_samples_per_epoch is None:
        num_samples_per_epoch = sum(_count_samples(urls, keys) for urls in sources)
        if num_samples_per_epoch == 0:
            raise RuntimeError(f"no usable sample: no shard of {shards!r} holds a {'/'.join(keys)} file")
    metadata_filter = MetadataFilter(
        min_original_size, max_pwatermark, max_punsafe,
        tuple(aspect_ratio_range) if aspect_ratio_range is not None else None, min_caption_length)
    dataset = WebImageTextDataset(
        sources, weights, max(1, num_samples_per_epoch // (world_size * batch_size)), batch_size, rank,
        world_size, num_workers, resampled, seed, shuffle_buffer,
        ImageTransform(resolution, center_crop, random_flip), keys, caption_key, caption_json_fields,
        metadata_filter)
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
