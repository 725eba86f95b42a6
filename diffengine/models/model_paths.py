"""Where pretrained models come from: local folders (recorded as absolute paths) or hub ids."""
from pathlib import Path

DENOISER_SUBFOLDERS = ("unet", "transformer")


def looks_local(path: str) -> bool:
    """True for a path that cannot be a hub id (``org/name`` or a bare name)."""
    return Path(path).expanduser().is_absolute() or path.startswith((".", "~")) or path.count("/") >= 2


def pretrained_location(path: str, role: str) -> str:
    """An existing local folder as an absolute path (so it still resolves from elsewhere), or a hub id.

    Raises FileNotFoundError for a local-looking path that does not exist, instead of the hub's
    "Repo id must be in the form ..." that transformers and diffusers would raise, and
    NotADirectoryError for a file (a model's ``config.json`` given for its folder).
    """
    local = Path(path).expanduser()
    if local.is_file():
        raise NotADirectoryError(f"{role} {path} is a file: give the model's folder"
                                 f"{f' ({local.parent})' if local.name.endswith('.json') else ''}")
    if local.exists():
        return str(local.resolve())
    if looks_local(path):
        raise FileNotFoundError(f"{role} {path!r} does not exist (a local model folder, or a hub id "
                                "such as org/name)")
    if not _cached_when_offline(path):
        raise FileNotFoundError(f"{role} {path!r} is not a folder here, and the hub is off (HF_HUB_OFFLINE) with "
                                "no cached model of that id: a typo, or a local folder elsewhere?")
    return path


def _cached_when_offline(hub_id: str) -> bool:
    """False when the hub is off and holds no cached snapshot of ``hub_id``: from_pretrained would fail
    with a page about the cache; True otherwise (online, the hub answers for itself)."""
    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError

    if not huggingface_hub.is_offline_mode():
        return True
    try:
        huggingface_hub.snapshot_download(hub_id, local_files_only=True)
    except (LocalEntryNotFoundError, ValueError):  # ValueError: not a valid hub id either
        return False
    return True


def vision_model_location(path: str, role: str = "vision_model") -> str:
    """``pretrained_location`` of a diffusers base-model folder, checked for its subfolders."""
    location = pretrained_location(path, role)
    folder = Path(location)
    if folder.is_dir():
        missing = [f"{name}/" for name in ("vae", "scheduler") if not (folder / name).is_dir()]
        if not any((folder / name).is_dir() for name in DENOISER_SUBFOLDERS):
            missing.insert(0, " or ".join(f"{name}/" for name in DENOISER_SUBFOLDERS))
        if missing:
            raise FileNotFoundError(f"{role} {path} has no {', no '.join(missing)}: a vision model is a "
                                    "diffusers base-model folder with unet/ or transformer/, vae/ "
                                    "and scheduler/")
        configs = [folder / name / "config.json" for name in ("vae", *DENOISER_SUBFOLDERS)
                   if (folder / name).is_dir()] + [folder / "scheduler" / "scheduler_config.json"]
        unconfigured = [str(config.relative_to(folder)) for config in configs if not config.is_file()]
        if unconfigured:
            raise FileNotFoundError(f"{role} {path} has no {', no '.join(unconfigured)}: an incomplete copy of "
                                    "a diffusers base-model folder?")
    return location


def language_model_location(path: str, role: str = "text_encoder") -> str:
    """``pretrained_location`` of a transformers model folder, checked to hold its ``config.json``
    (a diffusers base-model folder given instead is named as such)."""
    location = pretrained_location(path, role)
    folder = Path(location)
    if folder.is_dir() and not (folder / "config.json").is_file():
        diffusers_folder = (folder / "model_index.json").is_file() or any(
            (folder / name).is_dir() for name in DENOISER_SUBFOLDERS)
        kind = "a diffusers base-model folder" if diffusers_folder else "a folder"
        inner = " (its text_encoder/ subfolder is one)" if (folder / "text_encoder" / "config.json").is_file() else ""
        raise FileNotFoundError(f"{role} {path} has no config.json: it is {kind}, not a transformers "
                                f"language model folder{inner}")
    return location
