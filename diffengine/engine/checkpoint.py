"""Resume on torch >= 2.6: load MMEngine checkpoints with ``weights_only=True`` and an allow-list.

MMEngine 0.10.7 calls ``torch.load(path)``; torch >= 2.6 defaults to ``weights_only=True`` and
rejects the non-tensor objects MMEngine itself writes (message hub history, numpy scalars). We
replace MMEngine's local-file loader with one that allows exactly those types, so a checkpoint
from an untrusted source still cannot run arbitrary pickled code.
"""
import os.path as osp

import numpy as np
import torch
from mmengine.logging.history_buffer import HistoryBuffer
from mmengine.runner.checkpoint import CheckpointLoader

SAFE_CHECKPOINT_GLOBALS = [
    HistoryBuffer,
    np.dtype,
    np.ndarray,
    np._core.multiarray._reconstruct,
    np._core.multiarray.scalar,
    *{type(np.dtype(name)) for name in ("float64", "float32", "float16", "int64", "int32", "bool")},
]


@CheckpointLoader.register_scheme(prefixes="", force=True)
def load_local_checkpoint(filename: str, map_location=None) -> dict:
    """Load a local checkpoint with ``weights_only=True`` plus the MMEngine allow-list."""
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f"{filename} can not be found.")
    with torch.serialization.safe_globals(SAFE_CHECKPOINT_GLOBALS):
        return torch.load(filename, map_location=map_location, weights_only=True)
