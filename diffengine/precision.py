"""What ``"auto"`` means for a floating-point format: the fastest one this machine computes well."""
import torch

from diffengine.constants import WEIGHT_DTYPE_NAMES

AUTO = "auto"
# the torch dtype of each weight_dtype name
TORCH_DTYPES = {name: getattr(torch, name) for name in WEIGHT_DTYPE_NAMES}


def half_precision() -> str:
    """bfloat16 where it is native (CPUs, GPUs from Ampere on), else float16 (V100, T4)."""
    if torch.cuda.is_available() and not torch.cuda.is_bf16_supported(including_emulation=False):
        return "float16"
    return "bfloat16"


def weight_dtype_name(name: str) -> str:
    """``name``, or for ``"auto"``: half precision on a GPU, float32 on a CPU (its half-precision
    matmuls are slower than float32 ones)."""
    if name != AUTO:
        return name
    return half_precision() if torch.cuda.is_available() else "float32"


def autocast_dtype_name(name: str | None) -> str | None:
    """``name``, or for ``"auto"``: ``half_precision()``; float16 needs loss scaling, which the
    mixed-precision optimizer wrapper's GradScaler does."""
    return half_precision() if name == AUTO else name
