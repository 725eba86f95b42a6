"""The image-caption stream of one rank: shard order, worker slots, parsing, decoding and resume."""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import itertools
import json
import logging
import multiprocessing
import os
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import webdataset as wds
from PIL import ExifTags, Image, ImageOps
from torch.utils.data import IterableDataset, get_worker_info

from diffengine.contracts import CROP_TOP_LEFT_KEY, LATENTS_KEY, ORIGINAL_SIZE_KEY, PIXELS_KEY, TEXT_KEY

from ..errors import NoUsableSampleError
from .latent_shards import (
    FLIPPED_LATENT_EXT,
    LATENT_EXT,
    LATENTS_RECORD,
    read_latent,
    resolution_mismatch,
    stored_sizes,
)
from .metadata_filter import MetadataFilter
from .shard_reader import ShardReader
from .shards import draw_shards, is_remote, slot_slice
from .skip_accounting import SkipCounter, WorkerMessages
from .transforms import ImageTransform

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StreamSpec:
    """What a rank's stream reads and how: its shards, its share of an epoch, order and sample parsing."""

    sources: tuple[tuple[str, ...], ...]  # shard urls of each source
    weights: tuple[float, ...] | None  # mixing weights of the sources (None: a single source)
    # Mean samples per shard of each source as counted from tar headers (None: not counted),
    # to estimate how many samples a shard that breaks off takes with it.
    shard_sizes: tuple[float | None, ...]
    batches_per_rank: int
    batch_size: int
    rank: int
    world_size: int
    num_workers: int
    resampled: bool
    seed: int
    shuffle_buffer: int
    transform: ImageTransform
    image_keys: tuple[str, ...]
    caption_key: str
    caption_json_fields: tuple[str, ...]
    metadata_filter: MetadataFilter
    # The builder warned that an epoch takes more samples than the shards hold: then every
    # pass runs out, and saying so again at each one would add nothing.
    repeats_expected: bool = False
    fast_tar_reader: bool = True  # False: every shard through webdataset's tarfile path


class WebImageTextDataset(IterableDataset):
    """Image-caption samples from webdataset shards; iterate it through build_wds_dataloader.

    Samples of latent shards (``diffengine prep-latents``) yield their stored ``latent_parameters``
    instead of ``pixel_values``: the random flip then picks the stored flipped view, where there
    is one, with the same draw an image sample makes, and there is no crop to draw.
    """

    def __init__(self, spec: StreamSpec) -> None:
        super().__init__()
        self.spec = spec
        self.counter = SkipCounter(spec.num_workers)
        self.messages = WorkerMessages()
        self.reader = ShardReader(self.counter, self.messages, spec.fast_tar_reader)
        # Shared so that persistent workers see an epoch set after they were started.
        self._epoch = multiprocessing.RawValue("q", 0)
        # Where resume_from asks the next pass to start: [epoch (-1: none), batches trained,
        # then the stream position of each worker slot].
        self._slots = max(1, spec.num_workers)
        self._resume = multiprocessing.RawArray("q", [-1, 0] + [0] * self._slots)
        self._all_urls = frozenset(itertools.chain.from_iterable(spec.sources))

    @property
    def seed(self) -> int:
        """Seed of the stream's order (StreamingIterBasedTrainLoop records it in checkpoints)."""
        return self.spec.seed

    @functools.cached_property
    def stream_fingerprint(self) -> str:
        """A digest of what the stream reads and which samples it keeps in which order: each
        source's shard urls, the sources' weights, each local shard's size, and the options that
        choose and order samples (image and caption keys, metadata filters, shuffle buffer,
        resampling). Saved stream positions count its samples: a shard set grown, rewritten
        (``prep-wds --overwrite``) or reordered, or a filter or shuffle buffer changed, is another stream."""
        spec = self.spec
        sizes = [[os.path.getsize(url) if not is_remote(url) and os.path.isfile(url) else None for url in urls]
                 for urls in spec.sources]
        sampling = [spec.image_keys, spec.caption_key, spec.caption_json_fields,
                    dataclasses.asdict(spec.metadata_filter), spec.shuffle_buffer, spec.resampled]
        record = json.dumps([spec.sources, spec.weights, sizes, sampling], default=str)
        return hashlib.sha256(record.encode()).hexdigest()[:16]

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
        if not 0 <= batches_trained < self.spec.batches_per_rank:
            raise ValueError(f"batches_trained must be in [0, {self.spec.batches_per_rank}), "
                             f"got {batches_trained}")
        self._resume[:] = [epoch, batches_trained, *positions]

    @property
    def metainfo(self) -> dict[str, Any]:
        """Dataset description that MMEngine's loops hand to the visualizer."""
        return {"num_shards": len(self._all_urls), "resampled": self.spec.resampled,
                "resolution": self.spec.transform.resolution}

    @property
    def skip_counts(self) -> dict[str, int]:
        """Skipped items by kind, summed over this process's DataLoader workers."""
        return self.counter.totals()

    def take_messages(self) -> tuple[list[str], int]:
        """Messages for the log (failing shards, refilled epochs) since the last call, and how many missed."""
        return self.messages.take()

    def __len__(self) -> int:
        """Nominal samples per rank and epoch (DataLoader divides it by batch_size)."""
        return self.spec.batches_per_rank * self.spec.batch_size

    def __iter__(self) -> Iterator[dict[str, Any]]:
        spec = self.spec
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
        quota = (_share(spec.batches_per_rank, num_workers, worker)
                 - _share(trained, num_workers, worker)) * spec.batch_size
        produced = 0
        position = 0  # parsed samples of this slot's stream so far (this epoch)
        visited: set[str] = set()  # shards opened since the last usable sample
        skipped = self.counter.local_total()
        for pass_index in itertools.count():
            if produced >= quota:
                return
            if pass_index == 1 and not spec.resampled and not spec.repeats_expected:
                # The first pass read each of this slot's shards once: what it gave is all there
                # is, and the rest of the epoch repeats it (resampled passes repeat by design).
                wanted = _share(spec.batches_per_rank, num_workers, worker) * spec.batch_size
                message = (f"epoch {epoch}, rank {spec.rank}, worker {worker}: a pass over its shards gave "
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
                sample = self._decode(item, _rng("augment", spec.seed, epoch, spec.rank, worker, position))
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
                raise NoUsableSampleError(
                    f"no usable sample in {len(self._all_urls)} shard(s) (rank {spec.rank}, worker "
                    f"{worker}), e.g. {sorted(self._all_urls)[0]!r}; skipped so far: {counts}")

    def shard_samples(self, url: str) -> Iterator[dict[str, Any]]:
        """Each usable sample of one shard in stored order, transformed, with its ``meta``; skips counted.

        No shuffle, no epoch quota: what ``diffengine prep-latents`` encodes. The transform's
        random draws (none with center crop and no flip) are seeded by the shard and the key.
        """
        for raw in self.reader.samples(iter([{"url": url}]), visited=set(), shard_size=None):
            item = self._parse(raw)
            if item is None:
                continue
            item["__key__"] = raw["__key__"]
            sample = self._decode(item, _rng("augment", self.spec.seed, url, raw["__key__"]))
            if sample is not None:
                sample["meta"] = item["meta"]
                yield sample

    def _pass(self, epoch: int, pass_index: int, worker: int, num_workers: int,
              visited: set[str]) -> Iterator[dict[str, Any]]:
        """One pass over each source's shards for this rank and worker, mixed by weight."""
        streams = [self._source_pass(i, urls, epoch, pass_index, worker, num_workers, visited)
                   for i, urls in enumerate(self.spec.sources)]
        if len(streams) == 1:
            return streams[0]
        return _mix(streams, self.spec.weights, _rng("mix", self.spec.seed, epoch, pass_index, self.spec.rank, worker))

    def _source_pass(self, source: int, urls: Sequence[str], epoch: int, pass_index: int, worker: int,
                     num_workers: int, visited: set[str]) -> Iterator[dict[str, Any]]:
        spec = self.spec
        here = (spec.seed, source, epoch, pass_index, spec.rank, worker)  # seeds this worker's streams
        if spec.resampled:
            shard_rng = _rng("resample", *here)
            # A finite draw (10 per shard) bounds a pass, so a stream without usable data can end.
            shards: Any = functools.partial(draw_shards, urls, shard_rng, 10 * len(urls))
        else:
            # Same order on every rank (no rank/worker in the seed), then disjoint slices.
            shards = wds.SimpleShardList(urls, seed=f"order:{spec.seed}:{source}:{epoch}:{pass_index}")
        stages: list[Any] = [shards]
        if not spec.resampled:
            stages.append(functools.partial(slot_slice, start=spec.rank * num_workers + worker,
                                            step=spec.world_size * num_workers))
        stages.append(functools.partial(self.reader.samples, visited=visited,
                                        shard_size=spec.shard_sizes[source]))
        if spec.shuffle_buffer > 0:
            stages.append(wds.shuffle(spec.shuffle_buffer, rng=_rng("shuffle", *here)))
        stages.append(wds.map(self._parse))  # metadata filters: decoding comes later, in __iter__
        return iter(wds.DataPipeline(*stages))

    def _parse(self, sample: dict[str, Any]) -> dict[str, Any] | None:
        """Pick image (or latent) bytes and caption and apply the metadata filters; None skips the sample."""
        key = f"{sample['__key__']} in {sample.get('__url__')}"
        latent = sample.get(LATENT_EXT)
        image = None if latent is not None else next(
            (sample[ext] for ext in self.spec.image_keys if ext in sample), None)
        if image is None and latent is None:
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
        reason = self.spec.metadata_filter.reason(meta, caption)
        if reason is not None:
            return self._skip(f"filtered_{reason}", key)
        if latent is not None:
            self._check_latent_resolution(meta, key)
            return {"latent": latent, "latent_flip": sample.get(FLIPPED_LATENT_EXT), TEXT_KEY: caption,
                    "where": key, "meta": meta}
        return {"image": image, TEXT_KEY: caption, "where": key, "meta": meta}

    def _check_latent_resolution(self, meta: dict[str, Any], key: str) -> None:
        """Raise ValueError when a latent sample was encoded at another resolution than the loader's."""
        mismatch = resolution_mismatch(meta.get(LATENTS_RECORD), self.spec.transform.resolution, "resolution")
        if mismatch is not None:
            raise ValueError(f"latent sample {key} was {mismatch}")

    def _caption(self, sample: dict[str, Any], meta: dict[str, Any]) -> str | None:
        """Caption file first, then json fields; "" when all present ones are blank, None when none is."""
        candidates = [meta[f] for f in self.spec.caption_json_fields if isinstance(meta.get(f), str)]
        if self.spec.caption_key in sample:
            candidates.insert(0, sample[self.spec.caption_key].decode("utf-8", errors="replace"))
        if not candidates:
            return None
        return next((c.strip() for c in candidates if c.strip()), "")

    def _decode(self, item: dict[str, Any], rng: random.Random) -> dict[str, Any] | None:
        """Decode and transform the image; None (counted) when the bytes are not a readable image."""
        if "latent" in item:
            return self._decode_latent(item, rng)
        size = self.spec.transform.resolution
        try:
            with Image.open(io.BytesIO(item["image"])) as image:
                decoded_size = _upright_size(image)  # before draft shrinks it
                image.draft(None, (size, size))  # JPEG: decode at a reduced scale still >= size
                ImageOps.exif_transpose(image, in_place=True)  # in place: no copy when upright
                pixel_values, crop = self.spec.transform.crop_and_flip(image, rng)
        except Exception as exn:  # noqa: BLE001 - PIL signals bad data with many exception types
            return self._skip("decode_error", f"{item['where']}: {exn!r}")
        # SDXL's size and crop micro-conditions, recorded for every family (two int pairs); the
        # whole crop offset is for prep-latents, which also records the mirrored view's
        return {PIXELS_KEY: pixel_values, TEXT_KEY: item[TEXT_KEY], "__key__": item["__key__"],
                ORIGINAL_SIZE_KEY: _original_size(item["meta"], decoded_size),
                CROP_TOP_LEFT_KEY: (crop.top, crop.left), "crop": crop}

    def _decode_latent(self, item: dict[str, Any], rng: random.Random) -> dict[str, Any] | None:
        """The stored latent parameters, or their flipped view when the flip draw says so."""
        # the draw ImageTransform makes with a center crop: a sample flips alike from either shard
        flip = self.spec.transform.random_flip and rng.random() < 0.5 and item["latent_flip"] is not None
        try:
            parameters = read_latent(item["latent_flip"] if flip else item["latent"])
        except (ValueError, EOFError, OSError) as exn:  # not a whole .npy of a float (2C, h, w) array
            return self._skip("decode_error", f"{item['where']}: {exn!r}")
        sample = {LATENTS_KEY: parameters, TEXT_KEY: item[TEXT_KEY], "__key__": item["__key__"]}
        sizes = stored_sizes(item["meta"].get(LATENTS_RECORD), flip)  # for SDXL's time ids
        if sizes is not None:
            sample[ORIGINAL_SIZE_KEY], sample[CROP_TOP_LEFT_KEY] = sizes
        return sample

    def _skip(self, kind: str, detail: str) -> None:
        self.counter.add(kind, detail)
        return None


# EXIF orientations that turn the stored image by 90 degrees (exif_transpose swaps its sides)
_QUARTER_TURNS = frozenset({5, 6, 7, 8})


def _upright_size(image: Image.Image) -> tuple[int, int]:
    """The (height, width) of the image as ``exif_transpose`` will stand it up."""
    width, height = image.size
    if image.getexif().get(ExifTags.Base.Orientation) in _QUARTER_TURNS:
        return width, height
    return height, width


def _original_size(meta: dict[str, Any], decoded_size: tuple[int, int]) -> tuple[int, int]:
    """The image's (height, width) before any resizing: img2dataset's ``original_height`` /
    ``original_width`` when the shard's json has them (img2dataset resizes and records the
    source's size there), else the decoded image's size."""
    original = meta.get("original_height"), meta.get("original_width")
    if all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in original):
        return original
    return decoded_size


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


def _share(batches: int, num_workers: int, worker: int) -> int:
    """How many of the first `batches` batches worker slot `worker` delivers (round-robin)."""
    return batches // num_workers + (worker < batches % num_workers)
