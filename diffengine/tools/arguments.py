"""argparse value types and checks shared by the commands (import-free: keeps ``--help`` fast)."""
import argparse
import math
import os
from collections.abc import Callable, Iterable
from pathlib import Path

from ..constants import MAX_SEED, PIXEL_MULTIPLE


def _number(text: str, kind: type, expected: str, valid: Callable[[float], bool], requirement: str):
    """``kind(text)`` when ``valid``, else argparse's one-line usage error: what was ``expected``, or
    the ``requirement`` the value fails."""
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
    if not valid(value):
        raise argparse.ArgumentTypeError(f"must be {requirement}, got {text}")
    return value


def positive_int(text: str) -> int:
    """A whole number >= 1, or argparse's one-line usage error."""
    return _number(text, int, "a whole number >= 1", lambda value: value >= 1, ">= 1")


def non_negative_int(text: str) -> int:
    """A whole number >= 0 (a count that may be none: workers, a buffer)."""
    return _number(text, int, "a whole number >= 0", lambda value: value >= 0, ">= 0")


def positive_float(text: str) -> float:
    """A finite number > 0 (a rate, a peak throughput); NaN fails every comparison."""
    return _number(text, float, "a number > 0", lambda value: 0 < value < math.inf, "a finite number > 0")


def non_negative_float(text: str) -> float:
    """A number >= 0 (a guidance scale: a negative one would steer away from the prompt); not NaN."""
    return _number(text, float, "a number >= 0", lambda value: value >= 0, ">= 0")


def seed(text: str) -> int:
    """A random seed: a whole number from 0 to ``MAX_SEED``."""
    return _number(text, int, "a whole number >= 0", lambda value: 0 <= value <= MAX_SEED,
                   f"from 0 to 2**64 - 1 ({MAX_SEED})")


def image_side(text: str) -> int:
    """An image side in pixels: a whole number >= 1 that is a multiple of ``PIXEL_MULTIPLE``."""
    value = positive_int(text)
    if value % PIXEL_MULTIPLE:
        raise argparse.ArgumentTypeError(f"must be a multiple of {PIXEL_MULTIPLE} pixels, got {value}")
    return value


def add_cfg_options_argument(parser: argparse.ArgumentParser, help_text: str) -> None:
    """``--cfg-options KEY=VALUE ...``: overrides of a config's entries (none by default)."""
    parser.add_argument("--cfg-options", nargs="+", default=[], metavar="KEY=VALUE", help=help_text)


def add_overwrite_argument(parser: argparse.ArgumentParser, what: str) -> None:
    """``--overwrite``: replace ``what`` where it already exists."""
    parser.add_argument("--overwrite", action="store_true", help=f"replace {what} that already exist(s)")


def refuse_to_overwrite(paths: Iterable[Path], overwrite: bool) -> None:
    """Raise ValueError naming the first of ``paths`` that exists, unless ``overwrite``."""
    existing = [path for path in paths if path.exists()]
    if existing and not overwrite:
        more = f" and {len(existing) - 1} more" if len(existing) > 1 else ""
        raise ValueError(f"{existing[0]}{more} already exist(s): not overwriting (--overwrite replaces)")


def resolve_device(requested: str | None) -> str:
    """``--device`` checked before any model loads: default cuda when available, else cpu."""
    import torch

    if requested is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(requested)
    except RuntimeError:
        raise ValueError(f"--device {requested}: not a torch device (cpu, cuda, cuda:1, ...)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {requested}: no CUDA device is available here (use --device cpu)")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        count = torch.cuda.device_count()
        raise ValueError(f"--device {requested}: this machine shows {count} CUDA device(s), "
                         f"cuda:0 to cuda:{count - 1} (CUDA_VISIBLE_DEVICES decides which)")
    return requested


def writable_folder(path: Path, option: str) -> None:
    """Create ``path`` (an output folder) now, or raise ValueError: not after the compute."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ValueError(f"{option} {path}: cannot create this folder ({error.strerror})") from None
    if not os.access(path, os.W_OK):
        raise ValueError(f"{option} {path}: this folder is not writable")


def creatable_folder(path: Path, option: str) -> None:
    """An output folder checked before the work that fills it, without creating it (an input error
    found next must not leave an empty one): its nearest existing folder must be writable."""
    existing = path.absolute()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"{option} {path}: cannot create this folder ({existing} is a file)")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"{option} {path}: {'this folder' if existing == path.absolute() else existing} "
                         "is not writable")


def writable_file(path: Path, overwrite: bool, option: str = "--out") -> None:
    """An output file, checked before the work that fills it: not a folder, not an earlier output
    unless ``overwrite``, in a folder that can be created (it is, now)."""
    if path.is_dir():
        raise ValueError(f"{option} {path} is a folder: name the file to write")
    refuse_to_overwrite([path], overwrite)
    writable_folder(path.parent, option)
