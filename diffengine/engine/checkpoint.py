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
``FiniteWeightsHook`` refuses to write a checkpoint whose weights hold a NaN or infinity.
"""
import os.path as osp
import pickle

import numpy as np
import torch
from mmengine.hooks import Hook
from mmengine.logging import HistoryBuffer
from mmengine.runner.checkpoint import CheckpointLoader

from diffengine.errors import NonFiniteTrainingError, UnreadableCheckpointError
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


@HOOKS.register_module()
class FiniteWeightsHook(Hook):
    """Stops the run rather than save non-finite weights; ``DiffEngineRunner`` registers it itself.

    It runs before any checkpoint, bridge or model folder is written, so keep-last-N clean-up
    never replaces finite checkpoints with broken ones.
    """

    priority = "VERY_HIGH"

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        """Raise ``NonFiniteTrainingError`` naming the first weight that is not finite."""
        for name, value in checkpoint.get("state_dict", {}).items():
            if torch.is_tensor(value) and value.is_floating_point() and not torch.isfinite(value).all():
                raise NonFiniteTrainingError(
                    f"not saving iteration {checkpoint.get('meta', {}).get('iter')}: weight {name} is "
                    "not finite; the last checkpoint written is the last finite one")


@CheckpointLoader.register_scheme(prefixes="", force=True)
def load_local_checkpoint(filename: str, map_location=None, mmap: bool = False) -> dict:
    """Load a local checkpoint with ``weights_only=True`` (tensors and plain Python only).

    Raises ``UnreadableCheckpointError`` naming the file when it is truncated or corrupt, or holds
    objects other than tensors and plain data (refused as unsafe: unpickling them could run code).
    """
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f"checkpoint {filename} does not exist")
    try:
        return torch.load(filename, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as error:
        # torch's message is a page of advice; the line naming the refused object is what matters
        found = [line.strip().split(". Please")[0] for line in str(error).splitlines()
                 if "Unsupported global" in line]
        raise UnreadableCheckpointError(f"checkpoint {filename} was refused as unsafe: it holds objects "
                                        "other than tensors and plain data, and unpickling them could run "
                                        f"code ({found[0] if found else type(error).__name__})") from error
    except (RuntimeError, EOFError, OSError) as error:
        raise UnreadableCheckpointError(f"checkpoint {filename} is unreadable (truncated or not a "
                                        f"checkpoint): {error}") from error
