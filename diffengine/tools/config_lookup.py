"""Find configs by name among the packaged ones, and copy them out (no heavy imports: the CLI's help path uses it)."""
import difflib
import shutil
from pathlib import Path

from diffengine.errors import ConfigError
from diffengine.file_writes import whole_file

PACKAGE_DIR = Path(__file__).resolve().parents[1]


class UnknownConfigError(LookupError):
    """A config name that is neither a file nor a packaged config."""


def configs_root() -> Path:
    """The repository's ``configs/`` in a source checkout, else the copy shipped in the wheel."""
    checkout = PACKAGE_DIR.parent / "configs"
    if checkout.is_dir() and (PACKAGE_DIR.parent / "setup.py").is_file():
        return checkout
    return PACKAGE_DIR / ".mim" / "configs"


def list_configs(pattern: str | None = None) -> dict[str, Path]:
    """Runnable configs (not ``_base_`` parts) by name, optionally filtered by a substring (any case)."""
    root = configs_root()
    found = {p.stem: p for p in sorted(root.rglob("*.py"))
             if "_base_" not in p.relative_to(root).parts and not p.name.startswith("_")}
    if pattern:
        found = {name: path for name, path in found.items() if pattern.lower() in name.lower()}
    return found


def resolve_config(name_or_path: str) -> Path:
    """A config file path, or the packaged config of that name (``.py`` optional)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    if len(path.parts) > 1 and path.is_dir():
        raise UnknownConfigError(f"config '{name_or_path}' is a folder: give a config file in it, or a "
                                 "packaged config name (`diffengine list-cfg`)")
    if len(path.parts) > 1:
        # a path that does not exist must not fall back to a packaged config of the same name
        raise UnknownConfigError(f"config file '{name_or_path}' does not exist")
    name = path.stem if path.suffix == ".py" else path.name
    configs = list_configs()
    if name in configs:
        return configs[name]
    close = difflib.get_close_matches(name, list(configs), n=3, cutoff=0.5)
    hint = f" Did you mean: {', '.join(close)}?" if close else " See `diffengine list-cfg`."
    raise UnknownConfigError(f"unknown config '{name_or_path}': not a file and not a packaged config.{hint}")


def copy_config(name: str, dest: str | Path, overwrite: bool = False) -> tuple[Path, Path]:
    """Copy a config into ``dest`` with the ``_base_`` parts and sibling configs it imports
    relatively; returns (the source, its copy). Refuses (ConfigError) to replace files there that
    differ from the packaged ones (the user's edits) unless ``overwrite``."""
    source = resolve_config(name)
    root = configs_root()
    dest_root = Path(dest)
    if not source.is_relative_to(root):
        copies = {source: dest_root / source.name}
    else:
        copies = {path: dest_root / path.relative_to(root)
                  for folder in {Path("_base_"), source.relative_to(root).parent}
                  for path in (root / folder).rglob("*.py")}
        copies.setdefault(source, dest_root / source.relative_to(root))
    existing = [copy for original, copy in copies.items()
                if copy.exists() and copy.read_bytes() != original.read_bytes()]
    if existing and not overwrite:
        raise ConfigError(f"{len(existing)} file(s) in {dest_root} differ from the packaged ones, e.g. "
                          f"{existing[0]}: not overwriting your edits (--overwrite replaces them)")
    for original, copy in copies.items():
        copy.parent.mkdir(parents=True, exist_ok=True)
        with whole_file(copy) as partial:  # a cut copy would pass for the user's edits next time
            shutil.copy2(original, partial)
    return source, copies[source]
