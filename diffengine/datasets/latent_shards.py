"""The layout of latent shards (``diffengine prep-latents``): what a sample stores and how it is read.

A latent sample is ``KEY.latent.npy`` (the VAE's ``latent_dist.parameters`` of the center-cropped
image: mean and logvar concatenated on channels, (2C, h, w)), optionally ``KEY.latent_flip.npy``
(the same for the horizontally flipped image), ``KEY.txt`` (caption) and ``KEY.json`` (the image
shard's metadata, plus under ``LATENTS_RECORD`` how the latents were made).
"""
from __future__ import annotations

import io

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
