"""The training loader's options tried on the first shards of a source, before any model loads.

A wrong ``image_keys`` or ``caption_key``, or metadata filters that reject everything, otherwise
stop a run at its first batch, after the language and vision models have loaded (minutes for a
7B LM). Unreadable shards are left to the loader, which skips and reports them: one corrupt shard
among many is data, not a mistake in the options.
"""
from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence

from .wds_dataset import StreamSpec, WebImageTextDataset

# Shards read at the most, each until its first usable sample, before the options are blamed.
PROBE_SHARDS = 3
UNREADABLE_KINDS = ("missing_shard", "tar_error")


def unusable_samples_reason(urls: Sequence[str], dataset: WebImageTextDataset) -> str | None:
    """Why the first ``PROBE_SHARDS`` of the local shards ``urls`` give no usable sample; None when
    one gives a sample, when they hold none, or when one does not read and other shards follow
    (training skips an unreadable shard).

    ``dataset`` parses, filters and decodes as the loader will (``shard_dataset``).
    """
    probed = list(urls[:PROBE_SHARDS])
    with _quiet_skips():
        for url in probed:
            if next(dataset.shard_samples(url), None) is not None:
                return None
        counts = {kind: count for kind, count in dataset.skip_counts.items() if count}
        if counts.get("tar_error", 0) == len(probed) == len(urls):
            return f"none of its {len(urls)} shard(s) reads as a tar archive, e.g. {probed[0]}"
        if not counts or any(kind in counts for kind in UNREADABLE_KINDS):
            return None
        files = _sample_files(dataset, probed[0])
    why = skip_reasons(dataset.spec)
    reasons = "; ".join(f"{count} with {why[kind]}" for kind, count in counts.items())
    return (f"none of the {sum(counts.values())} samples of the first {len(probed)} shard(s) is usable "
            f"({reasons}); e.g. {probed[0]}'s first sample holds {', '.join(files)}")


def skip_reasons(spec: StreamSpec) -> dict[str, str]:
    """What each kind of skipped sample (``SKIP_KINDS`` but the unreadable shards) lacked, in the
    words of the options that rejected it."""
    filters = spec.metadata_filter
    return {
        "missing_image": f"no image file of image_keys={';'.join(spec.image_keys)!r}",
        "json_error": "a .json file that is not a JSON object",
        "missing_caption": (f"no caption: no .{spec.caption_key} file (caption_key) and no "
                            f"{'/'.join(spec.caption_json_fields)} field in the .json (caption_json_fields)"),
        "empty_caption": "a blank caption",
        "filtered_min_size": f"a side below min_original_size={filters.min_original_size}",
        "filtered_pwatermark": f"pwatermark above max_pwatermark={filters.max_pwatermark}",
        "filtered_punsafe": f"punsafe above max_punsafe={filters.max_punsafe}",
        "filtered_aspect_ratio": f"an aspect ratio outside aspect_ratio_range={list(filters.aspect_ratio_range or ())}",
        "filtered_caption_length": f"a caption shorter than min_caption_length={filters.min_caption_length}",
        "decode_error": "an image file that does not decode",
    }


def _sample_files(dataset: WebImageTextDataset, url: str) -> list[str]:
    """The file extensions of a shard's first sample, e.g. ``['.jpg', '.json', '.txt']``."""
    samples = dataset.reader.samples(iter([{"url": url}]), visited=set(), shard_size=None)
    first = next(samples, None) or {}
    return sorted(f".{key}" for key in first if not key.startswith("__"))


@contextlib.contextmanager
def _quiet_skips() -> Iterator[None]:
    """No "skipped (...)" warnings while probing: the check reports what it found in one message."""
    from . import skip_accounting

    logger = logging.getLogger(skip_accounting.__name__)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)
