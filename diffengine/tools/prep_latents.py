"""``diffengine prep-latents``: encode image shards with the frozen VAE into latent shards.

Each image shard becomes a latent shard of the same name (layout in
``diffengine/datasets/latent_shards.py``), holding the VAE's latent distribution parameters of
the image as training would see it with a center crop and no flip (and, with ``--flip``, of its
mirror image), the caption and the metadata. A shard is written under a temporary name and
renamed when complete: a rerun skips the finished ones, and an interrupted run leaves no half shard.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from diffengine.contracts import LATENTS_KEY, ORIGINAL_SIZE_KEY, PIXELS_KEY, TEXT_KEY
from diffengine.file_writes import flush_rename, flush_to_disk

from .. import constants
from .arguments import add_overwrite_argument, image_side, positive_int, resolve_device, writable_folder

if TYPE_CHECKING:
    import torch
    from diffusers import AutoencoderKL

    from diffengine.datasets.wds_dataset import WebImageTextDataset

LATENT_DTYPES = ("float32", "float16")


def add_prep_latents_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``prep-latents`` (argparse only: keeps ``--help`` free of heavy imports)."""
    parser.add_argument("shards", nargs="+", metavar="SHARDS",
                        help="image shards: paths, brace patterns or globs ('/data/laion/{00000..00099}.tar')")
    parser.add_argument("out_dir", metavar="OUT_DIR", help="folder for the latent shards (same file names); "
                        "a rerun skips the shards already finished there, so an interrupted run resumes")
    parser.add_argument("--vision-model", required=True,
                        help="the diffusers base-model folder (or hub id) whose vae/ encodes the images: "
                        "the model.vision_model you will train with")
    parser.add_argument("--resolution", type=image_side, required=True,
                        help="image size in px (a multiple of 8, of 16 for PixArt, SD3 and Flux), the "
                        "train_dataloader.resolution you will train at")
    parser.add_argument("--batch-size", type=positive_int, default=32, help="images per VAE call (default 32)")
    parser.add_argument("--flip", action="store_true",
                        help="also store the latents of the horizontally flipped image, so that "
                        "random_flip still works in training")
    parser.add_argument("--device", default=None, help="cuda, cpu, ... (default: cuda if available)")
    parser.add_argument("--dtype", choices=constants.WEIGHT_DTYPE_NAMES, default="float32",
                        help="dtype the VAE encodes in (default float32)")
    parser.add_argument("--latent-dtype", choices=LATENT_DTYPES, default="float32",
                        help="dtype the latent parameters are stored in (default float32)")
    parser.add_argument("--caption-key", default=None, metavar="KEY",
                        help="the caption file of each sample to read, e.g. recap.txt (default txt, then the "
                        "json's caption/text): the latent shards store the caption read as .txt")
    parser.add_argument("--no-progress", action="store_true", help="do not show a progress bar")
    add_overwrite_argument(parser, "the latent shards in OUT_DIR")


def output_name(url: str) -> str:
    """The latent shard's file name for an image shard: its own name (compression suffix dropped)."""
    name = url.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
    stem, tar, _ = name.partition(".tar")
    return f"{stem}.tar" if tar else name


def run_prep_latents(args: argparse.Namespace) -> int:
    """Encode every image shard whose latent shard is not finished yet; returns 0, or 1 when
    no shard had a usable sample.

    Raises ValueError / FileNotFoundError (one line for the CLI) for bad inputs, before the VAE loads.
    """

    from diffengine.datasets.latent_shards import LATENT_EXT, first_sample
    from diffengine.datasets.shards import expand_shards
    from diffengine.models.model_paths import vision_model_location
    from diffengine.models.vision import check_image_sides, image_side_multiple

    urls = expand_shards(args.shards)
    if any(url.startswith("pipe:") for url in urls):
        raise ValueError("prep-latents reads local or URL shards, not pipe: commands")
    out_dir = Path(args.out_dir).expanduser()
    outputs = [out_dir / output_name(url) for url in urls]
    names: dict[Path, str] = {}
    for url, path in zip(urls, outputs, strict=True):
        if path in names:
            raise ValueError(f"shards {names[path]!r} and {url!r} would both be written to {path}: "
                             "encode them into different OUT_DIRs")
        if os.path.exists(url) and path.resolve() == Path(url).resolve():
            raise ValueError(f"OUT_DIR {out_dir} holds the image shards themselves: choose another folder")
        names[path] = url
    latent = next((url for url in urls if os.path.isfile(url)
                   and LATENT_EXT in (first_sample(url, read_data=False) or {})), None)
    if latent is not None:  # found again while encoding, but only after the VAE has loaded
        raise ValueError(f"{latent} is a latent shard already: prep-latents encodes image shards")
    vision_model = vision_model_location(args.vision_model)
    if Path(vision_model).is_dir():  # latents of a size the denoiser cannot patch would not train
        check_image_sides(image_side_multiple(vision_model), {"--resolution": args.resolution}, vision_model)
    device = resolve_device(args.device)
    writable_folder(out_dir, "OUT_DIR")
    if not args.overwrite:
        _check_finished_shards([path for path in outputs if path.exists()], vision_model, args)
    todo = [(url, path) for url, path in zip(urls, outputs, strict=True) if args.overwrite or not path.exists()]
    done = len(urls) - len(todo)
    if todo:
        out_dir.mkdir(parents=True, exist_ok=True)
        written, skipped, empty, broken = _encode_shards(todo, vision_model, device, args)
    else:
        written, skipped, empty, broken = 0, {}, [], []
    again = "" if args.overwrite else " (--overwrite encodes them again)"
    unusable = ", ".join(f"{kind} {count}" for kind, count in skipped.items()) or "none"
    print(f"prep-latents: {len(urls)} image shard(s) -> {out_dir}\n"
          f"  encoded:  {len(todo)} shard(s), {written} sample(s)\n"
          f"  finished before, skipped: {done} shard(s){again}\n"
          f"  unusable samples: {unusable}")
    if empty:
        print(f"  no usable sample, not written: {len(empty)} shard(s), e.g. {empty[0]}")
    if broken:
        print(f"  did not read whole, not written: {len(broken)} shard(s), e.g. {broken[0]}")
        print(f"diffengine: error: {len(broken)} image shard(s) did not read whole (cut, corrupt or missing, e.g. "
              f"{broken[0]}): no latent shard written for them, the others are finished; run again once they "
              "are whole, or leave damaged ones out of SHARDS", file=sys.stderr)
        return 1
    if todo and written == 0:
        print(f"diffengine: error: no sample encoded from {len(todo)} shard(s): no latent shard "
              "written", file=sys.stderr)
        return 1
    return 0


def _check_finished_shards(finished: list[Path], vision_model: str, args: argparse.Namespace) -> None:
    """Shards kept from an earlier run must hold what this run would write: one OUT_DIR of mixed
    resolutions, views or VAEs would train without error on latents that do not belong together."""
    from diffengine.datasets.latent_shards import first_latent_sample, vae_mismatch
    from diffengine.models.vision.families import vae_config_of

    vae_config = vae_config_of(vision_model)
    expected = {"resolution": args.resolution, "flipped_view": args.flip}
    for path in finished:
        latent = first_latent_sample(str(path))
        if latent is None:
            continue
        record, parameters = latent
        differences = [f"{name} {record[name]!r} vs {value!r}" for name, value in expected.items()
                       if name in record and record[name] != value]
        other_vae = vae_mismatch(record, parameters, vae_config) if vae_config is not None else None
        differences += [other_vae] if other_vae else []
        if differences:
            raise ValueError(f"{path}, finished by an earlier run, differs from what this run writes "
                             f"({', '.join(differences)}): encode into another OUT_DIR, or pass "
                             "--overwrite to encode every shard again")


def _encode_shards(todo: list[tuple[str, Path]], vision_model: str, device: str,
                   args: argparse.Namespace) -> tuple[int, dict[str, int], list[str], list[str]]:
    """Encode each (image shard, latent shard path); returns samples written, unusable ones by
    kind, the image shards without a usable sample and those that did not read whole (no latent
    shard written for either)."""
    import torch
    from diffusers import AutoencoderKL
    from tqdm import tqdm

    from diffengine.datasets.latent_shards import latents_record
    from diffengine.datasets.shards import count_samples, is_remote
    from diffengine.datasets.wds_loader import shard_dataset

    # the training loader's reader and decoding, with a center crop and no flip
    caption = {"caption_key": args.caption_key} if args.caption_key else {}
    dataset = shard_dataset(args.resolution, center_crop=True, random_flip=False, **caption)
    vae = AutoencoderKL.from_pretrained(vision_model, subfolder="vae", torch_dtype=getattr(torch, args.dtype))
    vae = vae.to(device).eval().requires_grad_(False)
    record = latents_record(args.resolution, args.flip, f"{vision_model}/vae", vae.config, args.dtype,
                            args.latent_dtype)
    local = [url for url, _ in todo if not is_remote(url)]
    total = (sum(count for count, _ in count_samples(local, dataset.spec.image_keys))
             if len(local) == len(todo) else None)
    written, empty, broken = 0, [], []
    with tqdm(total=total, unit="img", desc="encoding", disable=args.no_progress) as progress:
        for url, path in todo:
            count = _encode_shard(dataset, vae, url, path, record, args, progress)
            if count is None:
                broken.append(url)
                continue
            written += count
            empty += [] if count else [url]
    return written, {kind: count for kind, count in dataset.skip_counts.items() if count}, empty, broken


def _encode_shard(dataset: WebImageTextDataset, vae: AutoencoderKL, url: str, path: Path,
                  record: dict[str, Any], args: argparse.Namespace, progress) -> int | None:
    """Write one latent shard under a temporary name, then rename it; returns its sample count
    (0: the image shard had no usable sample; None: it did not read whole; nothing was written
    for either)."""
    import torch
    import webdataset as wds

    from diffengine.datasets.latent_shards import (
        FLIPPED_LATENT_EXT,
        LATENT_EXT,
        LATENTS_RECORD,
        latent_bytes,
        sizes_record,
    )
    from diffengine.datasets.shard_writer import SHARD_MTIME

    staging = path.with_name(f".{path.name}.tmp")  # no .tar suffix: shard globs never match it
    count, failures = 0, _read_failures(dataset)
    try:
        with wds.TarWriter(str(staging), mtime=SHARD_MTIME) as writer:
            for batch in _batches(dataset.shard_samples(url), args.batch_size):
                if LATENTS_KEY in batch[0]:
                    raise ValueError(f"{url} is a latent shard already: prep-latents encodes image shards")
                encoded = _latent_parameters(vae, torch.stack([s[PIXELS_KEY] for s in batch]), args.flip)
                parameters = encoded.to(getattr(torch, args.latent_dtype)).cpu()
                _check_finite(parameters, encoded, batch, url, args.latent_dtype)
                for index, sample in enumerate(batch):
                    crop = sample["crop"]
                    # mirrored, the crop's right margin becomes its left
                    sizes = sizes_record(sample[ORIGINAL_SIZE_KEY], (crop.top, crop.left),
                                         (crop.top, crop.right) if args.flip else None)
                    meta = {**sample["meta"], LATENTS_RECORD: {**record, "source": url, "sizes": sizes}}
                    entry = {"__key__": sample["__key__"], "txt": sample[TEXT_KEY],
                             LATENT_EXT: latent_bytes(parameters[index]),
                             "json": json.dumps(meta, default=str).encode("utf-8")}
                    if args.flip:
                        entry[FLIPPED_LATENT_EXT] = latent_bytes(parameters[len(batch) + index])
                    writer.write(entry)
                count += len(batch)
                progress.update(len(batch))
    except BaseException:
        staging.unlink(missing_ok=True)  # a killed run can still leave one: the next run rewrites it
        raise
    if _read_failures(dataset) != failures:
        # a cut shard (one still being written or copied) would be a finished latent shard that
        # no rerun encodes again, its missing samples lost without a word
        staging.unlink()
        return None
    if count == 0:  # an empty latent shard would only fail the training loader later
        staging.unlink()
        return 0
    flush_to_disk(staging)
    os.replace(staging, path)
    flush_rename(path)
    return count


def _read_failures(dataset: WebImageTextDataset) -> int:
    """The reader's count of samples lost to shards that were missing, cut or corrupt."""
    from diffengine.datasets.sample_check import UNREADABLE_KINDS

    return sum(dataset.skip_counts.get(kind, 0) for kind in UNREADABLE_KINDS)


def _check_finite(parameters: torch.Tensor, encoded: torch.Tensor, batch: list[dict[str, Any]], url: str,
                  latent_dtype: str) -> None:
    """Raise NonFiniteLatentsError when any sample of a batch (or of its mirror images) got non-finite latent
    parameters to store, which would train only NaN and be reported as a diverging learning rate; the
    VAE's own output (``encoded``) is looked at only then, to name the cause."""
    import torch

    from diffengine.errors import NonFiniteLatentsError

    finite = torch.isfinite(parameters).flatten(1).all(1).view(-1, len(batch)).all(0)
    if not finite.all():
        cause = ("the VAE made them: a float16 VAE overflows where bfloat16 and float32 do not (--dtype), or its "
                 "weights are broken" if not torch.isfinite(encoded).all()
                 else f"they overflowed {latent_dtype} storage: use --latent-dtype float32")
        key = batch[int((~finite).nonzero()[0])]["__key__"]
        raise NonFiniteLatentsError(f"{int((~finite).sum())} of {len(batch)} image(s) of a batch of {url} (e.g. "
                                    f"sample {key}) got non-finite latents, and {cause}; no latent shard is "
                                    "written for that image shard (finished ones are kept)")


def _latent_parameters(vae: AutoencoderKL, pixels: torch.Tensor, flip: bool) -> torch.Tensor:
    """``latent_dist.parameters`` of uint8 images (then of their mirror images, with ``flip``)."""
    import torch

    from diffengine.models.data_preprocessor import normalize_pixels

    pixels = normalize_pixels(pixels.to(vae.device))  # as the training data preprocessor does
    if flip:
        # flipping the cropped image is what ImageTransform's random flip does
        pixels = torch.cat([pixels, pixels.flip(-1)])
    with torch.no_grad():
        return vae.encode(pixels.to(vae.dtype)).latent_dist.parameters


def _batches(samples: Iterator[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    """Consecutive lists of up to ``size`` samples."""
    batch: list[dict[str, Any]] = []
    for sample in samples:
        batch.append(sample)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
