"""Checkpoints that load with ``torch.load(weights_only=True)``, so resume works on torch >= 2.6.

MMEngine 0.10.7 calls ``torch.load(path)``; torch >= 2.6 defaults to ``weights_only=True`` and
rejects what MMEngine writes: the message hub's ``HistoryBuffer`` objects, numpy arrays and
scalars, and bound methods pickled through ``getattr`` (allowing ``getattr`` would let a file call
anything). So:

- ``PlainMessageHubHook`` stores the message-hub history as plain lists (and numpy scalars as
  Python numbers) when a checkpoint is saved, and rebuilds the buffers when one is loaded,
  before MMEngine restores the message hub;
- ``load_local_checkpoint`` replaces MMEngine's local-file loader with ``weights_only=True``.

A checkpoint from an untrusted source therefore cannot run pickled code on load.
"""
import os.path as osp

import numpy as np
import torch
from mmengine.hooks import Hook
from mmengine.logging import HistoryBuffer
from mmengine.runner.checkpoint import CheckpointLoader

from diffengine.registry import HOOKS

PLAIN_BUFFER_TAG = "__history_buffer__"


def history_buffer_to_plain(buffer: HistoryBuffer) -> dict:
    """A HistoryBuffer as a dict of lists and ints."""
    logs, counts = buffer.data
    return {PLAIN_BUFFER_TAG: True, "log_history": logs.tolist(), "count_history": counts.tolist(),
            "max_length": buffer.max_length}


def plain_to_history_buffer(plain: dict) -> HistoryBuffer:
    """Inverse of ``history_buffer_to_plain``."""
    return HistoryBuffer(plain["log_history"], plain["count_history"], plain["max_length"])


@HOOKS.register_module()
class PlainMessageHubHook(Hook):
    """Keeps MMEngine objects out of checkpoints; ``DiffEngineRunner`` registers it itself."""

    priority = "VERY_HIGH"

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        """Replace HistoryBuffers and numpy scalars by plain data."""
        message_hub = checkpoint.get("message_hub", {})
        scalars = message_hub.get("log_scalars", {})
        for key, value in scalars.items():
            if isinstance(value, HistoryBuffer):
                scalars[key] = history_buffer_to_plain(value)
        info = message_hub.get("runtime_info", {})
        for key, value in info.items():
            if isinstance(value, np.generic):
                info[key] = value.item()

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        """Rebuild HistoryBuffers before MMEngine restores the message hub."""
        scalars = checkpoint.get("message_hub", {}).get("log_scalars", {})
        for key, value in scalars.items():
            if isinstance(value, dict) and value.get(PLAIN_BUFFER_TAG):
                scalars[key] = plain_to_history_buffer(value)


@CheckpointLoader.register_scheme(prefixes="", force=True)
def load_local_checkpoint(filename: str, map_location=None) -> dict:
    """Load a local checkpoint with ``weights_only=True`` (tensors and plain Python only)."""
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f"{filename} can not be found.")
    return torch.load(filename, map_location=map_location, weights_only=True)
