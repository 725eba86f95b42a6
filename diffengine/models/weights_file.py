"""Reading weight files with errors that name the file (truncated, corrupt, unsafe, non-finite)."""
import os.path as osp
import pickle
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from diffengine.errors import UnreadableCheckpointError


def load_checked_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    """A safetensors file's tensors; ValueError naming the file when it is unreadable or not finite."""
    try:
        state = load_file(path)
    except (OSError, SafetensorError) as error:
        raise ValueError(f"{path} is not a readable safetensors file ({error})") from None
    broken = [name for name, value in state.items() if value.is_floating_point() and not torch.isfinite(value).all()]
    if broken:
        raise ValueError(f"{path} holds non-finite weights ({len(broken)} tensors, e.g. {broken[0]}): "
                         "the run that wrote it diverged; use an earlier bridge")
    return state


def load_local_checkpoint(filename: str, map_location=None, mmap: bool = False) -> dict:
    """Load a local checkpoint with ``weights_only=True`` (tensors and plain Python only).

    Raises ``UnreadableCheckpointError`` naming the file when it is truncated or corrupt, or holds
    objects other than tensors and plain data (refused as unsafe: unpickling them could run code).
    """
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f"checkpoint {filename} does not exist")
    if osp.getsize(filename) == 0:  # torch's own errors for it are empty or about mmap
        raise UnreadableCheckpointError(f"checkpoint {filename} is unreadable (truncated or not a checkpoint): "
                                        "the file is empty")
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
                                        f"checkpoint): {error or type(error).__name__}") from error
