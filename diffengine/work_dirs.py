"""A work dir's layout: checkpoints, the model folders saved beside them, and the pointers to the newest.

``WORK_DIR/iter_N.pth`` (MMEngine's checkpoints, written as ``.iter_N.partial.pth``;
``last_checkpoint`` names the newest),
``WORK_DIR/<folder>/iter_N/`` (a bridge or model folder per checkpoint; ``<folder>/last_<folder>``
holds the newest one's name, written while saving as ``<folder>/.iter_N.tmp``, an earlier one
being replaced moved aside as ``.iter_N.old``) and ``WORK_DIR/samples/iter_N.png``; every one
written whole (``diffengine.file_writes``). Import-free beyond the standard library, for the CLI.
"""
import re
from pathlib import Path

from diffengine.constants import BRIDGE_FOLDER, BRIDGE_MANIFEST, LAST_CHECKPOINT, PRETRAINED_FOLDER, SAMPLES_FOLDER

_CHECKPOINT_NAME = re.compile(r"iter_(\d+)\.pth")
_MODEL_FOLDER_NAME = re.compile(r"iter_(\d+)")


def checkpoints_in(work_dir: str | Path) -> list[Path]:
    """The ``iter_N.pth`` checkpoints of a work dir, oldest first."""
    return _by_iteration(Path(work_dir).glob("iter_*.pth"), _CHECKPOINT_NAME)


def model_folder(work_dir: str | Path, folder: str, iteration: int) -> Path:
    """``WORK_DIR/<folder>/iter_N``: the model folder saved with checkpoint N."""
    return Path(work_dir) / folder / f"iter_{iteration}"


def checkpoint_iteration(checkpoint: str | Path) -> int | None:
    """N of an ``iter_N.pth`` checkpoint, by its name (None for another name)."""
    match = _CHECKPOINT_NAME.fullmatch(Path(checkpoint).name)
    return int(match.group(1)) if match else None


def checkpoint_bridge(checkpoint: str | Path | None, iteration: int, work_dir: str | Path) -> Path | None:
    """The bridge folder saved with checkpoint ``iteration``: beside the checkpoint file (another
    run's), else in ``work_dir`` (where the bridge hook writes whatever ``CheckpointHook(out_dir=...)``
    says)."""
    places = [Path(checkpoint).parent] if checkpoint else []
    for place in dict.fromkeys([*places, Path(work_dir)]):
        folder = model_folder(place, BRIDGE_FOLDER, iteration)
        if (folder / BRIDGE_MANIFEST).is_file():
            return folder
    return None


def latest_pointer(work_dir: str | Path, folder: str) -> Path:
    """``WORK_DIR/<folder>/last_<folder>``: the file naming the newest model folder."""
    return Path(work_dir) / folder / f"last_{folder}"


def model_folders_in(work_dir: str | Path, folder: str) -> list[Path]:
    """The ``<folder>/iter_N`` model folders of a work dir, oldest first."""
    return _by_iteration((Path(work_dir) / folder).glob("iter_*"), _MODEL_FOLDER_NAME)


def latest_model_folder(work_dir: str | Path, folder: str) -> Path | None:
    """The newest model folder ``last_<folder>`` names (a name, so a moved work dir still finds it);
    None before the first save."""
    pointer = latest_pointer(work_dir, folder)
    return pointer.parent / pointer.read_text().strip() if pointer.is_file() else None


def run_outputs(work_dir: str | Path) -> list[Path]:
    """What a run left in ``work_dir``: checkpoints, their pointer, and the bridge or model folders
    (half-written ones too) with their pointers; only these entries, so the user's own files there
    are never counted."""
    work_dir = Path(work_dir)
    found = [*checkpoints_in(work_dir), *sorted(work_dir.glob("epoch_*.pth")),
             *sorted(work_dir.glob(".iter_*.partial.pth"))]
    if (work_dir / LAST_CHECKPOINT).is_file():
        found.append(work_dir / LAST_CHECKPOINT)
    for folder in (BRIDGE_FOLDER, PRETRAINED_FOLDER):
        found += model_folders_in(work_dir, folder) + sorted((work_dir / folder).glob(".iter_*.tmp")) + sorted(
            (work_dir / folder).glob(".iter_*.old"))
        if latest_pointer(work_dir, folder).is_file():
            found.append(latest_pointer(work_dir, folder))
    return found


def sample_grids_in(work_dir: str | Path) -> list[Path]:
    """The ``samples/iter_N.png`` grids of a work dir."""
    return sorted((Path(work_dir) / SAMPLES_FOLDER).glob("iter_*.png"))


def resolve_bridge_dir(path: str | Path) -> Path:
    """A bridge folder itself, or the newest bridge of a work dir (``bridge/last_bridge``)."""
    path = Path(path)
    latest = latest_model_folder(path, BRIDGE_FOLDER)
    if not (path / BRIDGE_MANIFEST).is_file() and latest is not None:
        path = latest
    if not (path / BRIDGE_MANIFEST).is_file():
        raise FileNotFoundError(f"{path} is neither a bridge folder (bridge.json) nor a work dir "
                                "with bridge/last_bridge naming one")
    return path


def _by_iteration(paths, pattern: re.Pattern) -> list[Path]:
    found = [(int(m.group(1)), path) for path in paths if (m := pattern.fullmatch(path.name))]
    return [path for _, path in sorted(found)]
