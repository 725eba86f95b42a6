"""The layout of latent shards (``diffengine prep-latents``): what a sample stores and how it is read.

A latent sample is ``KEY.latent.npy`` (the VAE's ``latent_dist.parameters`` of the center-cropped
image: mean and logvar concatenated on channels, (2C, h, w)), optionally ``KEY.latent_flip.npy``
(the same for the horizontally flipped image), ``KEY.txt`` (caption) and ``KEY.json`` (the image
shard's metadata, plus under ``LATENTS_RECORD`` how the latents were made).
"""
from __future__ import annotations

import io
import json
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

LATENT_EXT = "latent.npy"
FLIPPED_LATENT_EXT = "latent_flip.npy"
# the metadata entry that records resolution, crop, VAE folder and factors, flipped view, dtype,
# and under "sizes" the image's original size and the crop's (top, left) in the stored view (and
# in the flipped one): SDXL's time ids
LATENTS_RECORD = "latents"


def latent_bytes(parameters: torch.Tensor) -> bytes:
    """One sample's latent parameters as .npy bytes (no pickle: safe to load)."""
    buffer = io.BytesIO()
    np.save(buffer, parameters.cpu().numpy(), allow_pickle=False)
    return buffer.getvalue()


def read_latent(data: bytes) -> torch.Tensor:
    """The tensor ``latent_bytes`` stored; raises ValueError for bytes that are not a numeric .npy."""
    array = np.load(io.BytesIO(data), allow_pickle=False)
    if array.dtype.kind != "f" or array.ndim != 3:
        raise ValueError(f"expected a float (2C, h, w) array, got {array.dtype} {array.shape}")
    return torch.from_numpy(array)


def is_json_member(name: str) -> bool:
    """The metadata members of a shard (``KEY.json``): what ``first_sample(read_data=is_json_member)`` reads."""
    return name.lower().endswith(".json")


def first_sample(path: str, read_data: bool | Callable[[str], bool] = True) -> dict[str, Any] | None:
    """A local shard's first sample, its members' data read as ``read_data`` says (see
    ``iter_tar_samples``); None when the shard is not a readable plain tar or holds no sample.
    Unbuffered: with ``read_data=is_json_member`` a shard costs a few kilobytes of reads, so every
    shard of a large set on network storage can be looked at."""
    from .tar_reader import is_plain_tar, iter_tar_samples

    try:
        with open(path, "rb", buffering=0) as stream:
            if not is_plain_tar(stream):
                return None
            return next(iter_tar_samples(stream, path, read_data=read_data), None)
    except (OSError, EOFError, ValueError):  # a corrupt shard: the loader counts and skips it
        return None


def sample_latents_record(sample: dict[str, Any]) -> dict:
    """The latents record in a sample's json (``{}`` without one); ValueError for json that does not parse."""
    meta = json.loads(sample["json"]) if sample.get("json") else {}
    record = meta.get(LATENTS_RECORD) if isinstance(meta, dict) else None
    return record if isinstance(record, dict) else {}


def first_latent_sample(path: str) -> tuple[dict, torch.Tensor] | None:
    """The latents record (from the json) and the latent parameters of a local shard's first sample;
    None when that sample holds no latent (an image shard), cannot be read, or the shard is not a plain tar."""
    sample = first_sample(path)
    if sample is None or LATENT_EXT not in sample:
        return None
    try:
        return sample_latents_record(sample), read_latent(sample[LATENT_EXT])
    except ValueError:  # a corrupt sample: the loader counts and skips it
        return None


def latents_record(resolution: int, flipped_view: bool, vae_folder: str, vae_config: Any, vae_dtype: str,
                   latent_dtype: str) -> dict[str, Any]:
    """The ``LATENTS_RECORD`` of a shard's latents: how they were made (each sample adds its
    ``"source"`` shard and ``"sizes"``); the readers below check training against it."""
    return {"resolution": resolution, "crop": "center", "flipped_view": flipped_view, "vae": vae_folder,
            "scaling_factor": vae_config.scaling_factor, "shift_factor": getattr(vae_config, "shift_factor", None),
            "vae_dtype": vae_dtype, "dtype": latent_dtype}


def sizes_record(original_size: tuple[int, int], crop_top_left: tuple[int, int],
                 flipped_crop_top_left: tuple[int, int] | None) -> dict[str, list[int]]:
    """The record's ``"sizes"``: the image's original (height, width) and the crop's (top, left) in
    the stored view and, when one is stored, in the flipped view: SDXL's time ids, as from image shards."""
    sizes = {"original_size": list(original_size), "crop_top_left": list(crop_top_left)}
    if flipped_crop_top_left is not None:
        sizes["flipped_crop_top_left"] = list(flipped_crop_top_left)
    return sizes


def stored_sizes(record: object, flipped: bool) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
    """(original size, crop top-left) of the stored (or flipped) view from a latents record; None for
    latents written before prep-latents recorded them (2026-12)."""
    sizes = record.get("sizes") if isinstance(record, dict) else None
    if not isinstance(sizes, dict):
        return None
    return tuple(sizes["original_size"]), tuple(sizes["flipped_crop_top_left" if flipped else "crop_top_left"])


def resolution_mismatch(record: object, resolution: int, option: str) -> str | None:
    """"encoded at R px but OPTION is S: ..." when a latents record names another resolution than
    the loader's (set by ``option``), else None (also for a record without one)."""
    encoded = record.get("resolution") if isinstance(record, dict) else None
    if encoded is None or encoded == resolution:
        return None
    return (f"encoded at {encoded} px but {option} is {resolution}: set {option}={encoded} or encode "
            "the image shards again with prep-latents --resolution")


def vae_mismatch(record: dict, parameters: torch.Tensor, vae_config: dict) -> str | None:
    """How the VAE that made these latents (their record and parameters) differs from the VAE of
    ``vae_config`` (a ``vae/config.json``), as "what stored vs expected", or None. Another VAE's
    latents may have the right channel count and still another scale and offset (SD3's and
    Flux's VAEs both have 16 channels)."""
    differences = []
    # a config.json without a key means AutoencoderKL's default: 4 channels, 0.18215, no shift
    vae_config = {"latent_channels": 4, "scaling_factor": 0.18215, "shift_factor": None, **vae_config}
    channels, expected_channels = parameters.shape[0] // 2, vae_config["latent_channels"]
    if channels != expected_channels:
        differences.append(f"latent channels {channels} vs {expected_channels}")
    for factor in ("scaling_factor", "shift_factor"):
        stored, expected = record.get(factor), vae_config.get(factor)
        # an older prep-latents recorded no shift_factor: only recorded factors are compared
        if factor in record and not (stored == expected or (
                stored is not None and expected is not None and math.isclose(stored, expected, rel_tol=1e-6))):
            differences.append(f"{factor} {stored} vs {expected}")
    return "; ".join(differences) or None
