"""Reading weight files with errors that name the file (truncated, corrupt, non-finite)."""
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file


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
