"""Find configs by name among the packaged ones (no heavy imports: the CLI's help path uses it)."""
import difflib
from pathlib import Path

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
    """Runnable configs (not ``_base_`` parts) by name, optionally filtered by a substring."""
    root = configs_root()
    found = {p.stem: p for p in sorted(root.rglob("*.py"))
             if "_base_" not in p.relative_to(root).parts and not p.name.startswith("_")}
    if pattern:
        found = {name: path for name, path in found.items() if pattern in name}
    return found


def resolve_config(name_or_path: str) -> Path:
    """A config file path, or the packaged config of that name (``.py`` optional)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
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
