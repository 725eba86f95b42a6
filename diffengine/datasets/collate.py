"""Batch collation for the webdataset loader, with worker batches written straight into shared memory."""
from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
from torch.utils.data import default_collate, get_worker_info

from diffengine.contracts import (
    LATENTS_KEY,
    PIXELS_KEY,
    SIZE_KEYS,
    STREAM_POSITION_KEY,
    TEXT_KEY,
)


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


def _tensor_key(samples: list[dict[str, Any]]) -> str:
    """``pixel_values`` or ``latent_parameters``, whichever all samples hold; ValueError for a mix."""
    latent = sum(LATENTS_KEY in s for s in samples)
    if 0 < latent < len(samples):
        raise ValueError(f"a batch mixes {latent} latent sample(s) (prep-latents shards) with "
                         f"{len(samples) - latent} image sample(s): train from image shards or from "
                         "latent shards, not both")
    return LATENTS_KEY if latent else PIXELS_KEY


def collate_batch(samples: list[dict[str, Any]], memfd: bool = True) -> dict[str, dict[str, Any]]:
    """Stack samples into the batch layout the models consume; no other key passes through.

    Image samples give ``pixel_values`` and (B, 2) int ``original_size`` / ``crop_top_left``,
    latent samples ``latent_parameters``. In a DataLoader
    worker, ``memfd=False`` leaves the stacking to torch's default_collate.
    """
    key = _tensor_key(samples)
    tensors = [s[key] for s in samples]
    if get_worker_info() is None:
        # numpy's stack is single-threaded: torch.stack's intra-op threads stall on a busy core
        stacked = torch.from_numpy(np.stack([tensor.numpy() for tensor in tensors]))
    elif memfd and _can_write_shared():
        stacked = _stack_into_memfd(tensors)
    else:
        stacked = default_collate(tensors)  # stacks straight into shared memory
    inputs = {key: stacked, TEXT_KEY: [s[TEXT_KEY] for s in samples]}
    for size_key in SIZE_KEYS:  # image samples have them; latent samples do not
        if all(size_key in s for s in samples):
            inputs[size_key] = torch.tensor([s[size_key] for s in samples], dtype=torch.long)
    return {
        "inputs": inputs,
        # where this batch leaves its worker slot's stream, for resume_from
        "data_samples": {"keys": [s["__key__"] for s in samples],
                         STREAM_POSITION_KEY: samples[-1]["__position__"]},
    }
