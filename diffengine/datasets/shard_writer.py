"""Write image-caption pairs as webdataset shards in img2dataset's layout (KEY.jpg/.txt/.json)."""
from __future__ import annotations

import io
import json
import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import webdataset as wds
from PIL import Image, ImageOps
from tqdm import tqdm

from diffengine.file_writes import flush_rename, flush_to_disk, partial_path, write_text_whole

from .transforms import to_rgb

logger = logging.getLogger(__name__)

ImageSource = Image.Image | bytes | str | os.PathLike
Sample = tuple[str, ImageSource, str, dict | None]

_PIL_FORMATS = {"jpg": "JPEG", "jpeg": "JPEG", "png": "PNG", "webp": "WEBP"}
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})


def _encode(source: ImageSource, pil_format: str,
            resize_to: int | None) -> tuple[bytes, tuple[int, int], tuple[int, int]]:
    """Encoded image bytes, original size and stored size; raises when the input is unreadable."""
    raw = None
    if isinstance(source, Image.Image):
        image = source
    else:
        raw = source if isinstance(source, bytes) else Path(source).read_bytes()
        image = Image.open(io.BytesIO(raw))
    image.load()
    oriented = ImageOps.exif_transpose(image)
    original = oriented.size
    shrink = resize_to is not None and min(original) > resize_to
    if raw is not None and image.format == pil_format and not shrink:
        return raw, original, original  # already in the target format: keep the bytes as they are
    oriented = to_rgb(oriented)
    if shrink:
        scale = resize_to / min(original)
        oriented = oriented.resize((max(resize_to, round(original[0] * scale)),
                                    max(resize_to, round(original[1] * scale))), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    oriented.save(buffer, format=pil_format, **({"quality": 95} if pil_format != "PNG" else {}))
    return buffer.getvalue(), original, oriented.size


# a fixed integer member time: shards are reproducible byte for byte, and a float time would add
# a PAX header to every member that readers then have to parse
SHARD_MTIME = 0


def write_wds_shards(samples: Iterable[Sample], out_dir: str | os.PathLike, prefix: str = "",
                     maxcount: int = 1000, image_format: str = "jpg", resize_to: int | None = None,
                     progress: bool = True) -> dict[str, Any]:
    """Write (key, image, caption, meta) samples to `{prefix}{shard:05d}.tar` shards and stats.json.

    Images in the target format pass through unchanged unless ``resize_to`` (shorter side, only
    ever shrinking) applies; others are converted to RGB and re-encoded. Unreadable images are
    counted and skipped. Keys must not contain "." or "/" (webdataset splits names on them).
    The shards are written under temporary names and renamed once all are whole, ``stats.json``
    last: a failure part-way leaves an earlier set in ``out_dir`` as it was.
    """
    pil_format = _PIL_FORMATS.get(image_format.lower())
    if pil_format is None:
        raise ValueError(f"image_format must be one of {sorted(_PIL_FORMATS)}, got {image_format!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stats: dict[str, Any] = {"written": 0, "unreadable": 0, "shards": 0, "shard_paths": []}
    writer, in_shard = None, 0
    try:
        for key, source, caption, meta in tqdm(samples, disable=not progress, unit="img", desc="writing shards"):
            if not key or "." in key or "/" in key:
                raise ValueError(f"sample key {key!r} must be non-empty without '.' or '/'")
            try:
                data, original, stored = _encode(source, pil_format, resize_to)
            except Exception as exn:  # noqa: BLE001 - PIL and the file system raise many types
                stats["unreadable"] += 1
                where = source if isinstance(source, str | os.PathLike) else (meta or {}).get("source", "")
                logger.warning("unreadable image %s (key %s): %r", where, key, exn)
                continue
            if writer is None or in_shard >= maxcount:
                if writer is not None:
                    writer.close()
                shard_path = out / f"{prefix}{stats['shards']:05d}.tar"
                writer, in_shard = wds.TarWriter(str(partial_path(shard_path)), mtime=SHARD_MTIME), 0
                stats["shards"] += 1
                stats["shard_paths"].append(str(shard_path))
            record = {"original_width": original[0], "original_height": original[1], **(meta or {}),
                      "key": key, "caption": caption, "width": stored[0], "height": stored[1]}
            writer.write({"__key__": key, image_format.lower(): data, "txt": caption,
                          "json": json.dumps(record, default=str).encode("utf-8")})
            in_shard += 1
            stats["written"] += 1
    except BaseException:
        if writer is not None:
            writer.close()
        for shard_path in stats["shard_paths"]:
            partial_path(shard_path).unlink(missing_ok=True)
        raise
    if writer is not None:
        writer.close()
    # every shard whole before any takes its name: a crash leaves the earlier set, not a mix
    for shard_path in stats["shard_paths"]:
        flush_to_disk(partial_path(shard_path))
    for shard_path in stats["shard_paths"]:
        partial_path(shard_path).replace(shard_path)
    flush_rename(out / "stats.json")
    write_text_whole(out / "stats.json", json.dumps(stats, indent=2))
    return stats


def samples_from_annotation_file(path: str | os.PathLike) -> Iterator[Sample]:
    """Samples from `image_path<TAB>caption` lines (LaVi-Bridge format); relative paths are resolved
    against the file's folder, malformed lines are logged and skipped."""
    path = Path(path)
    index = 0
    with path.open("rb") as lines:
        for number, raw in enumerate(lines, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                raise ValueError(f"{path}:{number}: not UTF-8 text ({error.reason}): save the annotation file "
                                 "as UTF-8") from None
            if not line.strip():
                continue
            image_path, tab, caption = line.rstrip("\r\n").partition("\t")
            if not tab or not image_path.strip() or not caption.strip():
                logger.warning("%s:%d: expected 'image_path<TAB>caption', skipping", path, number)
                continue
            image = path.parent / Path(image_path.strip()).expanduser()  # absolute paths stay absolute
            yield f"{index:09d}", image, caption.strip(), {"source": str(image)}
            index += 1


def samples_from_image_folder(folder: str | os.PathLike) -> Iterator[Sample]:
    """Samples from images under `folder` (recursively) captioned by same-named .txt files."""
    folder = Path(folder)
    images = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    index = uncaptioned = 0
    undecodable: list[Path] = []
    for image in images:
        caption_file = image.with_suffix(".txt")
        try:
            caption = caption_file.read_text(encoding="utf-8").strip() if caption_file.is_file() else ""
        except UnicodeDecodeError:
            undecodable.append(caption_file)
            continue
        if not caption:
            uncaptioned += 1
            continue
        yield f"{index:09d}", image, caption, {"source": str(image.relative_to(folder))}
        index += 1
    if uncaptioned:
        logger.warning("%s: skipped %d image(s) without a non-empty .txt caption", folder, uncaptioned)
    if undecodable:
        logger.warning("%s: skipped %d image(s) whose .txt caption is not UTF-8 text, e.g. %s", folder,
                       len(undecodable), undecodable[0])
