"""What a training config reads from disk, checked before any model loads: the model folders, shard
specs against the files and the readers, latent shards against the model, and the loader's options
against the first samples."""
import inspect
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from diffengine.errors import SETUP_ERRORS, ConfigError, describe_error

from .launch import checks_for_the_job, planned_world_size

if TYPE_CHECKING:
    from mmengine.config import Config


def check_model_folders(cfg: "Config") -> None:
    """``model.text_encoder``, ``model.vision_model`` and, where a model takes them, ``model.tokenizer``
    and ``model.vae`` must be folders of their kind (or hub ids), found here, by the process that
    launches the workers, rather than by each worker after its imports and the weights before them."""
    from diffengine.models.model_paths import language_model_location, pretrained_location, vision_model_location

    model = cfg.get("model")
    if not isinstance(model, dict):
        return
    locations = (("text_encoder", language_model_location), ("vision_model", vision_model_location),
                 ("tokenizer", pretrained_location), ("vae", _vae_location))
    for key, location in locations:
        if isinstance(model.get(key), str):
            try:
                location(model[key], role=f"model.{key}")
            except (FileNotFoundError, NotADirectoryError) as error:
                raise ConfigError(str(error)) from None


def _vae_location(path: str, role: str) -> str:
    """``pretrained_location`` of an AutoencoderKL folder, which holds its ``config.json``."""
    from diffengine.models.model_paths import pretrained_location

    location = pretrained_location(path, role)
    if Path(location).is_dir() and not (Path(location) / "config.json").is_file():
        raise FileNotFoundError(f"{role} {path} has no config.json: an AutoencoderKL folder is what "
                                "AutoencoderKL.save_pretrained writes (a base model's vae/)")
    return location


def check_model_arguments(cfg: "Config") -> None:
    """The model class's own check of its arguments (``check_arguments``, where it has one: configs
    read, no weights), so that a bad option is one line before any runner or worker starts. On
    ``--resume``, the bridge saved with the checkpoint is checked as a ``bridge_path`` would be:
    settings that change what its weights mean, or weights that would not fit, are refused now,
    not once every model has loaded."""
    from diffengine.registry import MODELS

    model = cfg.get("model")
    if not isinstance(model, dict) or "type" not in model:
        return
    kind = MODELS.get(model["type"]) if isinstance(model["type"], str) else model["type"]
    check = getattr(kind, "check_arguments", None)
    if check is None:
        return
    arguments = {key: value for key, value in model.items() if key != "type"}
    resumed = _resumed_bridge(cfg) if "bridge_path" in inspect.signature(kind).parameters else None
    if resumed is not None and arguments.get("bridge_path") is None:
        arguments["bridge_path"] = str(resumed)
    try:
        check(**arguments)
    except SETUP_ERRORS as error:
        raise ConfigError(f"{'--resume: ' if resumed else ''}{describe_error(error)}") from error
    side_multiple = getattr(kind, "image_side_multiple", None)
    if side_multiple is not None and isinstance(model.get("vision_model"), str):
        _check_image_sides(cfg, side_multiple(model["vision_model"]), model["vision_model"])


def _resumed_bridge(cfg: "Config") -> Path | None:
    """The bridge folder saved with the checkpoint ``--resume`` continues from, when there is one."""
    from diffengine.work_dirs import checkpoint_bridge, checkpoint_iteration

    load_from = cfg.get("load_from")
    iteration = checkpoint_iteration(load_from) if cfg.get("resume") and isinstance(load_from, str) else None
    return checkpoint_bridge(load_from, iteration, cfg.work_dir) if iteration is not None else None


def _check_image_sides(cfg: "Config", multiple: int, vision_model: str) -> None:
    """The training resolution and the sampling hooks' sizes, against what the denoiser patches: the
    model and the pipeline refuse them too, but only once every weight has loaded."""
    from diffengine.models.vision import check_image_sides

    loader = cfg.get("train_dataloader")
    sides = {"train_dataloader.resolution": loader.get("resolution") if isinstance(loader, dict) else None}
    for index, hook in enumerate(cfg.get("custom_hooks") or []):
        if isinstance(hook, dict):
            sides.update({f"custom_hooks.{index}.{name}": hook.get(name) for name in ("height", "width")})
    try:
        check_image_sides(multiple, {key: side for key, side in sides.items() if isinstance(side, int)}, vision_model)
    except ValueError as error:
        raise ConfigError(str(error)) from None


def check_shards(cfg: "Config") -> list[str]:
    """Local shard specs must match files, of the kind the model trains from, now, not after the models
    have loaded; returns the warnings to log (what the shards make of an option without an error)."""
    from diffengine.datasets.shards import is_remote
    from diffengine.datasets.wds_loader import build_wds_dataloader, shard_sources

    loader = cfg.get("train_dataloader")
    shards = loader.get("shards") if isinstance(loader, dict) else None
    if shards is None:
        return []
    defaults = inspect.signature(build_wds_dataloader).parameters
    workers = loader.get("num_workers", defaults["num_workers"].default)
    readers = planned_world_size() * max(1, workers)
    try:
        specs, sources = shard_sources(shards, loader.get("weights"), bool(loader.get("resampled", False)), readers)
    except FileNotFoundError as error:
        raise ConfigError(f"train_dataloader.shards: {error}") from None
    except ValueError as error:
        raise ConfigError(f"train_dataloader: {error}") from None
    remote = next((url for source in sources for url in source if is_remote(url)), None)
    if remote is not None and loader.get("num_samples_per_epoch") is None:
        # the loader counts an epoch from local tar headers; it would say so once the model has loaded
        raise ConfigError(f"train_dataloader.num_samples_per_epoch is required for remote shards such as "
                          f"{remote!r}: give the number of samples an epoch reads")
    local = [[url for url in source if not is_remote(url)] for source in sources]
    weights = loader.get("weights") or [1.0] * len(specs)
    # a source of weight 0 is never read
    read = [(spec, urls) for spec, urls, weight in zip(specs, local, weights, strict=True) if weight > 0]
    model = cfg.get("model")
    warnings = []
    # every shard, once per job (not again in each of its ranks)
    if isinstance(model, dict) and checks_for_the_job():
        warnings = _check_latent_shards(list(dict.fromkeys(url for _, urls in read for url in urls)), model,
                                        loader.get("resolution"), loader.get("center_crop", True),
                                        loader.get("random_flip", defaults["random_flip"].default),
                                        loader.get("caption_key", defaults["caption_key"].default))
    _check_first_samples(loader, read)
    return warnings


def _check_first_samples(loader: dict, sources: list[tuple[Any, list[str]]]) -> None:
    """Each source's first local shards must give a usable sample with the loader's parsing options."""
    from diffengine.datasets.sample_check import unusable_samples_reason
    from diffengine.datasets.wds_loader import shard_dataset

    options = {name: loader[name] for name in inspect.signature(shard_dataset).parameters if name in loader}
    for spec, urls in sources:
        try:
            reason = unusable_samples_reason(urls, shard_dataset(**options)) if urls else None
        except ValueError as error:  # an option the parser refuses, e.g. aspect_ratio_range
            raise ConfigError(f"train_dataloader: {error}") from None
        if reason is not None:
            raise ConfigError(f"train_dataloader: shards {spec!r}: {reason}")


def _check_latent_shards(paths: list[str], model: dict, resolution: Any, center_crop: Any,
                         random_flip: Any, caption_key: Any) -> list[str]:
    """Every local shard, by its first sample's file names and json (a few kilobytes a shard): latents
    when the model has no VAE encoder, one kind of shard only (a batch cannot mix latents and
    images), and latents made by this model's VAE at the loader's resolution: another VAE's latents
    (another scale, offset or channel count) would train without error and teach the bridge nothing
    usable; and no random crop (``center_crop=False``) of latents, which hold centre crops. Each
    distinct way of making latents is compared once, with the latents of its first shard. Shards
    that do not read are left to the loader, which counts and skips them. Returns a warning where
    ``random_flip`` meets latents without a stored flipped view: those samples are never flipped.
    A ``caption_key`` other than ``txt`` that latent shards lack is refused: prep-latents stores the
    caption it read as ``.txt``, and the loader would silently take the json's instead."""
    from diffengine.datasets.latent_shards import (
        LATENT_EXT,
        first_latent_sample,
        first_sample,
        is_json_member,
        sample_latents_record,
    )
    from diffengine.datasets.wds_loader import CAPTION_KEY

    compared, latent_shard, without_latents, unflipped = set(), None, None, []
    for path in paths:
        sample = first_sample(path, read_data=is_json_member)
        if sample is None:
            continue
        if LATENT_EXT not in sample:
            without_latents = without_latents or path
            continue
        latent_shard = latent_shard or path
        if caption_key != CAPTION_KEY and caption_key not in sample:
            raise ConfigError(f"train_dataloader.caption_key={caption_key!r}, but latent shard {path} holds no "
                              f".{caption_key}: prep-latents stores the caption it read as .{CAPTION_KEY}, so "
                              f"set caption_key={CAPTION_KEY!r} (encoding with prep-latents --caption-key "
                              f"{caption_key} to keep that caption)")
        try:
            record = sample_latents_record(sample)
        except ValueError:
            continue
        if not record.get("flipped_view"):
            unflipped.append(path)
        # what differs between the shards of one prep-latents run: the image shard and the sizes
        made = json.dumps({k: v for k, v in record.items() if k not in ("source", "sizes")}, sort_keys=True,
                          default=str)
        latent = first_latent_sample(path) if made not in compared else None
        if latent is not None:
            compared.add(made)
            _check_latents_fit(path, *latent, model, resolution)
    if latent_shard is not None and center_crop is False:
        # the random crop would be silently the centre one: prep-latents encoded centre crops
        raise ConfigError(f"train_dataloader.center_crop=False takes random crops, but {latent_shard} holds latents "
                          "of centre crops (prep-latents): set center_crop=True, or train from the image shards")
    warnings = [f"train_dataloader.random_flip=True, but {len(unflipped)} latent shard(s) such as {unflipped[0]} "
                "hold no flipped view (prep-latents without --flip): their samples are never flipped; "
                "re-encode with --flip, or set random_flip=False"] if unflipped and random_flip else []
    if without_latents is None or (latent_shard is None and model.get("vae_encoder", True) is not False):
        return warnings
    if latent_shard is None:
        raise ConfigError(f"model.vae_encoder=False trains from latent shards, but {without_latents} holds no "
                          f"*.{LATENT_EXT}: encode the image shards with `diffengine prep-latents`, "
                          "or set model.vae_encoder=True")
    raise ConfigError(f"train_dataloader.shards mixes latent shards ({latent_shard}) with shards without latents "
                      f"({without_latents}): a batch holds one kind, so train from image shards or from latent "
                      "shards (`diffengine prep-latents` encodes the others)")


def _check_latents_fit(path: str, record: dict, parameters: Any, model: dict, resolution: Any) -> None:
    """Latents of ``path`` (its first sample's record and parameters) must be this model's VAE's, at
    the loader's resolution."""
    from diffengine.datasets.latent_shards import resolution_mismatch, vae_mismatch
    from diffengine.models.vision.families import vae_config_of

    vision_model = model.get("vision_model")
    # a hub id's too (every packaged LAION config names one): SD1.5 latents would train SDXL silently
    vae_config = vae_config_of(str(Path(str(vision_model)).expanduser())) if vision_model else None
    mismatch = vae_mismatch(record, parameters, vae_config) if vae_config is not None else None
    if mismatch is not None:
        raise ConfigError(f"train_dataloader.shards: {path} holds latents of the VAE {record.get('vae', '?')} "
                          f"and model.vision_model's VAE differs ({mismatch}): encode the image shards again "
                          f"with `diffengine prep-latents --vision-model {vision_model}`")
    mismatch = resolution_mismatch(record, resolution, "train_dataloader.resolution") if isinstance(
        resolution, int) else None
    if mismatch is not None:
        raise ConfigError(f"train_dataloader.shards: {path} holds latents {mismatch}")
