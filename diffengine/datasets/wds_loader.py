"""The public builder: a DataLoader of image-caption batches from webdataset shards that fits MMEngine's loops."""
from __future__ import annotations

import functools
import logging
import math
import os
from collections.abc import Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader

from ..errors import NoUsableSampleError
from .collate import collate_batch
from .latent_shards import LATENT_EXT
from .metadata_filter import MetadataFilter
from .shards import count_samples, expand_shards, is_remote, mean_clean, repeat_warnings
from .transforms import ImageTransform
from .wds_dataset import StreamSpec, WebImageTextDataset

# How many samples the builder counts, at most, to tell whether a given num_samples_per_epoch
# exceeds what the shards hold (their tar headers are read: ~10 us a sample with a warm cache).
_CHECK_SAMPLES = 10_000


# which files of a sample hold its image and caption (img2dataset's layout), by default
IMAGE_KEYS = "jpg;jpeg;png;webp"
CAPTION_KEY = "txt"
CAPTION_JSON_FIELDS = ("caption", "text")


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


def shard_sources(shards: str | Sequence[str] | Sequence[str | Sequence[str]], weights: Sequence[float] | None,
                  resampled: bool, readers: int) -> tuple[list[Any], list[list[str]]]:
    """The shard spec of each source (one, or one per weight) and its shard URLs, checked: every
    source lists shards and, without ``resampled``, holds one for each of ``readers``
    (world_size x num_workers) at least."""
    if weights is None:
        source_specs: list[Any] = [shards]
    elif (isinstance(shards, str) or len(shards) != len(weights) or not all(0 <= w < math.inf for w in weights)
          or sum(weights) <= 0):  # NaN fails 0 <= w too
        raise ValueError("weights needs shards as a list of sources of the same length, "
                         "with finite non-negative weights that do not all vanish")
    else:
        source_specs = list(shards)
    sources = [expand_shards(spec) for spec in source_specs]
    for spec, urls in zip(source_specs, sources, strict=True):
        if not urls:
            raise FileNotFoundError(f"shard spec {spec!r} lists no shard")
        if not resampled and len(urls) < readers:
            raise ValueError(
                f"shards {spec!r}: {len(urls)} shard(s) cannot give each of world_size x num_workers = "
                f"{readers} readers its own shards; add shards, lower num_workers or use resampled=True")
    return source_specs, sources


def parse_image_keys(image_keys: str) -> list[str]:
    """``"jpg;PNG"`` -> ``["jpg", "png"]``: the image extensions of ``image_keys``."""
    return [k.strip().lower() for k in image_keys.split(";") if k.strip()]


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
    image_keys: str = IMAGE_KEYS,
    caption_key: str = CAPTION_KEY,
    caption_json_fields: Sequence[str] = CAPTION_JSON_FIELDS,
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
    fast_tar_reader: bool = True,
    memfd_batches: bool = True,
) -> DataLoader:
    """Build a DataLoader of image-caption batches from webdataset shards.

    Batches are ``{"inputs": {"pixel_values": uint8[B, 3, R, R], "text": [str],
    "original_size": int[B, 2], "crop_top_left": int[B, 2]}, "data_samples": {"keys": [str],
    "stream_position": int}}``: each image's (height, width) before resizing (img2dataset's
    ``original_height`` / ``original_width`` when its json has them) and the (top, left) of its
    crop in the resized, possibly flipped image (SDXL's time ids). Latent shards written by
    ``diffengine prep-latents`` give ``"latent_parameters": float[B, 2C, R/f, R/f]`` (the VAE's
    ``latent_dist.parameters``) instead of ``pixel_values`` and no sizes; ``resolution`` must be the one they were
    encoded at, ``random_flip`` takes their stored flipped view (if any) half of the time, and a
    batch that would mix image and latent samples raises ValueError. ``len(loader)`` is the per-rank
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
    shared memory; only a stream in which no shard yields a usable sample raises NoUsableSampleError.
    Each failing shard (with its reason and the samples it lost) and each pass that runs out
    before its share of an epoch are also put in ``loader.dataset.take_messages()``, which
    DataSkipLogHook writes to the work dir's log. An epoch that takes more samples than the
    shards hold is logged as a warning here (local shards, counted from their tar headers; with
    ``num_samples_per_epoch`` given, only as far as ``_CHECK_SAMPLES``).

    Two fast paths can be switched off, e.g. to rule them out when data looks wrong; the batches
    stay the same. ``fast_tar_reader=False`` reads (and counts) every shard through webdataset's
    tarfile path instead of the plain-tar reader of ``tar_reader`` (which, unlike tarfile, reads
    on past a corrupt header). ``memfd_batches=False`` lets torch's default_collate stack the
    pixels in DataLoader workers instead of writing each batch into a memfd file.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    rank, world_size = _dist_info(rank, world_size)
    source_specs, sources = shard_sources(shards, weights, resampled, world_size * max(1, num_workers))
    keys = parse_image_keys(image_keys)
    data_keys = [*keys, LATENT_EXT]  # what makes a sample count: an image, or a latent
    shares = [1.0] if weights is None else [weight / sum(weights) for weight in weights]
    given = num_samples_per_epoch is not None
    if not given:
        counted: list[list[tuple[int, bool]] | None] = [
            count_samples(urls, data_keys, fast_tar_reader=fast_tar_reader) for urls in sources]
        num_samples_per_epoch = sum(count for counts in counted for count, _ in counts)
        if num_samples_per_epoch == 0:
            raise NoUsableSampleError(f"no usable sample: no shard of {shards!r} holds a "
                                      f"{'/'.join(data_keys)} file (image_keys={image_keys!r})")
    batches_per_rank = max(1, num_samples_per_epoch // (world_size * batch_size))
    epoch_samples = batches_per_rank * batch_size * world_size
    if given:
        # Counted only as far as an epoch's share and _CHECK_SAMPLES: a large dataset is not
        # scanned at the start for a check that its size makes moot (each pass still reports
        # running out, see WebImageTextDataset.__iter__).
        counted = [None if any(is_remote(url) for url in urls)
                   else count_samples(urls, data_keys, min(share * epoch_samples, _CHECK_SAMPLES),
                                      fast_tar_reader=fast_tar_reader)
                   for urls, share in zip(sources, shares, strict=True)]
    epoch = f"num_samples_per_epoch={num_samples_per_epoch}{'' if given else ' (counted)'}"
    if epoch_samples != num_samples_per_epoch:
        epoch += (f" (an epoch is {batches_per_rank} batch(es) of {batch_size} on each of {world_size} "
                  f"rank(s): {epoch_samples} samples)")
    held = [sum(count for count, _ in counts) if counts is not None and len(counts) == len(urls) else None
            for counts, urls in zip(counted, sources, strict=True)]
    warnings = repeat_warnings(source_specs, held, shares, epoch, epoch_samples)
    if warnings:
        from mmengine.logging import print_log  # ~0.3 s to import: only when there is a warning

        for warning in warnings:
            print_log(warning, logger="current", level=logging.WARNING)
    parsing = _sample_parsing(resolution, center_crop, random_flip, image_keys, caption_key, caption_json_fields,
                              MetadataFilter(min_original_size, max_pwatermark, max_punsafe,
                                             _pair(aspect_ratio_range), min_caption_length))
    dataset = WebImageTextDataset(StreamSpec(
        sources=tuple(tuple(urls) for urls in sources),
        weights=tuple(weights) if weights is not None else None,
        shard_sizes=tuple(mean_clean(counts) for counts in counted),
        batches_per_rank=batches_per_rank, batch_size=batch_size, rank=rank, world_size=world_size,
        num_workers=num_workers, resampled=resampled, seed=seed, shuffle_buffer=shuffle_buffer,
        repeats_expected=bool(warnings), fast_tar_reader=fast_tar_reader, **parsing))
    loader = DataLoader(
        dataset, batch_size=batch_size, collate_fn=functools.partial(collate_batch, memfd=memfd_batches),
        num_workers=num_workers, pin_memory=pin_memory, persistent_workers=persistent_workers and num_workers > 0,
        prefetch_factor=prefetch_factor if num_workers > 0 else None)
    # An IterableDataset's DataLoader owns a sampler-less _InfiniteConstantSampler; giving it
    # set_epoch lets MMEngine's epoch propagation reach the dataset.
    loader.sampler.set_epoch = dataset.set_epoch
    return loader


def shard_dataset(resolution: int, center_crop: bool = True, random_flip: bool = True,
                  image_keys: str = IMAGE_KEYS, caption_key: str = CAPTION_KEY,
                  caption_json_fields: Sequence[str] = CAPTION_JSON_FIELDS, min_original_size: int | None = None,
                  max_pwatermark: float | None = None, max_punsafe: float | None = None,
                  aspect_ratio_range: Sequence[float] | None = None, min_caption_length: int = 1,
                  fast_tar_reader: bool = True) -> WebImageTextDataset:
    """A dataset that reads whole shards one at a time (its ``shard_samples``), parsing, filtering
    and decoding samples as ``build_wds_dataloader`` with the same options does; no stream."""
    parsing = _sample_parsing(resolution, center_crop, random_flip, image_keys, caption_key, caption_json_fields,
                              MetadataFilter(min_original_size, max_pwatermark, max_punsafe,
                                             _pair(aspect_ratio_range), min_caption_length))
    return WebImageTextDataset(StreamSpec(
        sources=(), weights=None, shard_sizes=(), batches_per_rank=1, batch_size=1, rank=0, world_size=1,
        num_workers=0, resampled=False, seed=0, shuffle_buffer=0, fast_tar_reader=fast_tar_reader, **parsing))


def _sample_parsing(resolution: int, center_crop: bool, random_flip: bool, image_keys: str, caption_key: str,
                    caption_json_fields: Sequence[str], metadata_filter: MetadataFilter) -> dict[str, Any]:
    """The ``StreamSpec`` fields that say how a sample is parsed, filtered and decoded."""
    return {"transform": ImageTransform(resolution, center_crop, random_flip),
            "image_keys": tuple(parse_image_keys(image_keys)), "caption_key": caption_key,
            "caption_json_fields": tuple(caption_json_fields), "metadata_filter": metadata_filter}


def _pair(values: Sequence[float] | None) -> tuple[float, ...] | None:
    return tuple(values) if values is not None else None
