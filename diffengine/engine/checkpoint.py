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

import numpy as np
import torch
from mmengine.hooks import Hook
from mmengine.logging import HistoryBuffer
from mmengine.runner.checkpoint import CheckpointLoader

from diffengine.errors import NonFiniteTrainingError
from diffengine.models.weights_file import load_local_checkpoint
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


# MMEngine's loader of local files, replaced: tensors and plain data only
CheckpointLoader.register_scheme(prefixes="", loader=load_local_checkpoint, force=True)
