"""Shard lists: expanding shard specs, counting their samples from tar headers, and drawing shards."""
from __future__ import annotations

import glob
import itertools
import logging
import math
import os
import random
import re
import tarfile
import zlib
from collections.abc import Iterator, Sequence
from typing import Any

import braceexpand
from webdataset.tariterators import base_plus_ext

from .tar_reader import TarFormatError, is_plain_tar, iter_tar_samples

logger = logging.getLogger(__name__)

_REMOTE = re.compile(r"^(pipe:|[a-zA-Z][a-zA-Z0-9+.-]*://)")


def is_remote(url: str) -> bool:
    """True for a ``pipe:`` command or a URL with a scheme (``file://`` included)."""
    return _REMOTE.match(url) is not None


def expand_shards(spec: str | Sequence[str]) -> list[str]:
    """Expand brace patterns and globs of local shard specs; remote and pipe: specs only brace-expand.

    A listed file that is missing, or a glob of a brace pattern that matches nothing, is warned
    about (``/data/{laion,coyo}/*.tar`` with ``coyo/`` empty would train on one half silently), and
    a shard listed twice (overlapping specs, a folder linked under two names) is read once.
    """
    if not isinstance(spec, str):
        return _read_once([url for item in spec for url in expand_shards(item)], spec)
    if is_remote(spec) and not spec.startswith("file://"):
        return _read_once(list(braceexpand.braceexpand(spec)), spec)
    pattern = os.path.expanduser(re.sub(r"^file:(//)?", "", spec))
    found, missing = [], []
    for path in braceexpand.braceexpand(pattern):
        matches = sorted(glob.glob(path)) if glob.has_magic(path) else [path] if os.path.isfile(path) else []
        found.extend(matches)
        if not matches:
            missing.append(path)
    if not found:
        raise FileNotFoundError(f"shard spec {spec!r} matches no file")
    if missing:
        logger.warning("shard spec %r: %d listed file(s) or pattern(s) match nothing, e.g. %s", spec, len(missing),
                       missing[0])
    return _read_once(found, spec)


def _read_once(urls: list[str], spec: str | Sequence[str]) -> list[str]:
    """``urls`` with repeats dropped (a local file by its real path), warned about: a shard read twice
    an epoch would weigh its samples double, on two ranks."""
    kept = {}
    for url in urls:
        kept.setdefault(url if is_remote(url) else os.path.realpath(url), url)
    if len(kept) < len(urls):
        logger.warning("shard spec %r lists %d shard(s) more than once (overlapping patterns or linked "
                       "folders); each is read once", spec, len(urls) - len(kept))
    return list(kept.values())


def count_samples(urls: list[str], data_keys: Sequence[str], stop_above: float = math.inf,
                  fast_tar_reader: bool = True) -> list[tuple[int, bool]]:
    """(samples holding a file of ``data_keys`` (image or latent extensions), read without error) of
    local shards in order, from tar headers only.

    No data is read. Stops after the shard that brings the total above `stop_above`. Counted
    as the loader reads them: ``fast_tar_reader=False`` counts every shard through tarfile.
    """
    counts, total = [], 0
    for url in urls:
        if is_remote(url):
            raise ValueError(f"num_samples_per_epoch is required for remote shards such as {url!r}")
        keys = set()
        clean = True
        try:
            keys.update(_sample_keys(url, data_keys, fast_tar_reader))
        except (OSError, EOFError, zlib.error, tarfile.TarError, TarFormatError):
            clean = False  # counted as tar_error when the loader reads the shard
        counts.append((len(keys), clean))
        total += len(keys)
        if total > stop_above:
            break
    return counts


def _sample_keys(path: str, data_keys: Sequence[str], fast_tar_reader: bool) -> Iterator[str]:
    """Keys of a local tar's samples holding a file of ``data_keys``, from headers only (as the loader groups them)."""
    if fast_tar_reader:
        with open(path, "rb") as stream:
            if is_plain_tar(stream):
                # the fast reader's samples: those it drops around a corrupt header are not counted
                for sample in iter_tar_samples(stream, path, read_data=False):
                    if any(ext in sample for ext in data_keys):
                        yield sample["__key__"]
                return
    with tarfile.open(path) as tar:
        for member in tar:
            key, ext = base_plus_ext(member.name)
            if member.isreg() and key is not None and ext.lower() in data_keys:
                yield key


def mean_clean(counts: list[tuple[int, bool]] | None) -> float | None:
    """Mean samples per shard of the shards counted without error (None: none was)."""
    clean = [count for count, ok in counts or () if ok]
    return sum(clean) / len(clean) if clean else None


def repeat_warnings(specs: list[Any], held: list[int | None], shares: list[float], epoch: str,
                    epoch_samples: int) -> list[str]:
    """A warning for each source whose share of an epoch is more samples than its shards hold."""
    warnings = []
    for spec, samples, share in zip(specs, held, shares, strict=True):
        draws = share * epoch_samples
        if samples is None or draws <= samples:
            continue
        where = ("the shards" if len(specs) == 1
                 else f"~{draws:.0f} from {spec!r} (weight {share:.0%}), whose shards")
        seen = f"each is seen ~{draws / samples:.3g} times per epoch" if samples else "none can be read"
        warnings.append(f"{epoch} but {where} hold {samples} samples with an image: {seen}")
    return warnings


def draw_shards(urls: Sequence[str], rng: random.Random, count: int) -> Iterator[dict[str, str]]:
    """Shards drawn with replacement (wds.ResampledShards with an explicit, reproducible seed)."""
    for _ in range(count):
        yield {"url": rng.choice(urls)}


def slot_slice(source: Iterator[dict], start: int, step: int) -> Iterator[dict]:
    """This rank-and-worker slot's share of the shards (split_by_node then split_by_worker)."""
    return itertools.islice(source, start, None, step)
