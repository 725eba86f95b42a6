"""Writing files and folders whole: under a temporary name beside the final one, then renamed.

A crash (SIGKILL, a full disk) during a write then leaves the previous version, or nothing, under
the final name, never a truncated file or a half-written folder. The temporary names start with
a dot: patterns that start with a name (``iter_*``, ``00000.tar``) never match them, and
listings with a bare ``*`` skip dot-names (``visible``). What is renamed into place is flushed
to disk first, and its folder after (``flush_to_disk``, ``flush_rename``): ext4 and XFS may persist
a rename before the data it points to, and a power loss would then leave an empty file under the
final name. Import-free beyond the standard library, for the CLI.
"""
import os
import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path


def visible(paths: Iterable[Path]) -> list[Path]:
    """``paths`` without dot-names (``Path.glob("*")`` matches them, unlike a shell)."""
    return [path for path in paths if not path.name.startswith(".")]


def _fsync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    except OSError:
        if not path.is_dir():
            raise
        # some file systems (and platforms) cannot sync a folder: its entries are as durable as they get
    finally:
        os.close(descriptor)


def flush_to_disk(path: str | Path) -> None:
    """Flush a file, or a folder with everything in it, to the disk (before it is renamed into place)."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        for entry in sorted(path.rglob("*"), reverse=True):  # a folder's entries before the folder
            if not entry.is_symlink() and (entry.is_file() or entry.is_dir()):
                _fsync(entry)
    _fsync(path)


def flush_rename(path: str | Path) -> None:
    """Flush the folder that ``path`` was just renamed into (the rename itself, to the disk)."""
    _fsync(Path(path).parent)


def partial_path(path: str | Path) -> Path:
    """Where ``path`` is written before it is renamed into place (``.NAME.partial.EXT``: the
    extension kept, for writers that choose a format by it)."""
    path = Path(path)
    return path.with_name(f".{path.stem}.partial{path.suffix}")


@contextmanager
def whole_file(path: str | Path) -> Iterator[Path]:
    """Yield the temporary path to write ``path`` to; rename it into place when the block ends
    without an error (removed otherwise). A symbolic link is written through (its target is
    replaced); a path that is not a regular file (``/dev/stdout``, a pipe) is written directly."""
    path = Path(path)
    if path.is_symlink():
        path = path.resolve()
    if path.exists() and not path.is_file():
        yield path
        return
    partial = partial_path(path)
    try:
        yield partial
        flush_to_disk(partial)
        partial.replace(path)
        flush_rename(path)
    finally:
        partial.unlink(missing_ok=True)


def write_text_whole(path: str | Path, text: str) -> None:
    """``Path(path).write_text(text)``, whole (see the module docstring)."""
    with whole_file(path) as partial:
        partial.write_text(text)


def staging_path(folder: str | Path) -> Path:
    """Where ``folder`` is written before it is renamed into place (``.NAME.tmp``)."""
    folder = Path(folder)
    return folder.with_name(f".{folder.name}.tmp")


def aside_path(folder: str | Path) -> Path:
    """Where ``folder`` goes while it is replaced or deleted (``.NAME.old``)."""
    folder = Path(folder)
    return folder.with_name(f".{folder.name}.old")


def remove_folder(folder: str | Path) -> None:
    """Delete ``folder``, renamed aside first: it never stays half-deleted under its name."""
    aside = aside_path(folder)
    shutil.rmtree(aside, ignore_errors=True)
    os.replace(folder, aside)
    shutil.rmtree(aside)


@contextmanager
def whole_folder(folder: str | Path) -> Iterator[Path]:
    """Yield an empty staging folder to write ``folder`` into; when the block ends without an
    error, put it in place of ``folder``, whose earlier version is moved aside first and deleted
    only after (a crash in between leaves it whole as ``.NAME.old``). For folders the program
    names itself (``WORK_DIR/bridge/iter_N``); a folder the user names may be a mount point or
    ``.``, which cannot be renamed: ``filled_folder``."""
    folder, staging, aside = Path(folder), staging_path(folder), aside_path(folder)
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        yield staging
        flush_to_disk(staging)
        shutil.rmtree(aside, ignore_errors=True)
        if folder.exists():
            os.replace(folder, aside)
        os.replace(staging, folder)
        flush_rename(folder)
        shutil.rmtree(aside, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@contextmanager
def filled_folder(folder: str | Path, marker: str) -> Iterator[Path]:
    """Yield a staging folder inside ``folder`` (a folder the user names, kept itself); when the
    block ends without an error, move its entries into ``folder``, replacing those of the same
    name, with ``marker`` (the file that makes the folder usable: ``bridge.json``,
    ``model_index.json``) removed first and moved in last. A crash leaves the earlier version,
    or a folder without its marker that its readers refuse, never one that loads incomplete."""
    folder = Path(folder)
    staging = folder / ".partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        yield staging
        if not (staging / marker).is_file():
            raise FileNotFoundError(f"{folder}: the writer left no {marker}")
        flush_to_disk(staging)
        (folder / marker).unlink(missing_ok=True)
        for entry in sorted(staging.iterdir(), key=lambda path: path.name == marker):
            target = folder / entry.name
            if entry.name == marker:
                _fsync(folder)  # every other entry is in place on the disk before the marker is
            if target.is_dir() and not target.is_symlink():
                remove_folder(target)
            os.replace(entry, target)
        _fsync(folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
