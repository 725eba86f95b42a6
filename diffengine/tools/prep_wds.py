"""``diffengine prep-wds``: write webdataset shards (img2dataset layout) from local captioned images.

Two inputs are understood: the LaVi-Bridge annotation format (a text file of
``image_path<TAB>caption`` lines, relative paths resolved against the file's folder) and a folder
of images with same-named ``.txt`` captions.
"""
import argparse
import os
import sys
from pathlib import Path

from ..file_writes import visible
from .arguments import add_overwrite_argument, positive_int, writable_folder


def add_prep_wds_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``prep-wds`` (argparse only: keeps ``--help`` free of heavy imports)."""
    parser.add_argument("source", help="annotation file (lines 'image_path<TAB>caption', e.g. .txt/.tsv) "
                        "or a folder of images with same-named .txt captions")
    parser.add_argument("out_dir", help="folder for the PREFIX00000.tar shards and stats.json")
    parser.add_argument("--maxcount", type=positive_int, default=1000, help="samples per shard (default 1000)")
    parser.add_argument("--resize", type=positive_int, default=None, metavar="SIZE",
                        help="shrink images so the shorter side is SIZE px (never enlarges; "
                        "default: keep the original size)")
    parser.add_argument("--format", choices=["jpg", "png", "webp"], default="jpg", dest="image_format",
                        help="stored image format; images already in it and not resized are copied "
                        "byte for byte (default jpg)")
    parser.add_argument("--prefix", default="", help="shard file name prefix (default: none)")
    parser.add_argument("--no-progress", action="store_true", help="do not show a progress bar")
    add_overwrite_argument(parser, "the shards and stats.json in OUT_DIR (all of them are deleted first)")


def run_prep_wds(args: argparse.Namespace) -> int:
    """Write the shards; returns 0 when at least one sample was written, else 1.

    Raises ValueError when ``args.source`` is neither an existing file nor a folder.
    """
    from diffengine.datasets.shard_writer import (
        samples_from_annotation_file,
        samples_from_image_folder,
        write_wds_shards,
    )

    if "/" in args.prefix or os.sep in args.prefix or args.prefix.startswith("."):
        raise ValueError(f"--prefix {args.prefix!r}: a shard file name prefix, without '/' and not starting "
                         "with '.' (put a subfolder into OUT_DIR instead)")
    source = Path(args.source).expanduser()
    if source.is_dir():
        samples, kind = samples_from_image_folder(source), "image folder"
    elif source.is_file():
        samples, kind = samples_from_annotation_file(source), "annotation file"
    else:
        raise ValueError(f"source {args.source!r} does not exist (expected an annotation file or an image folder)")
    out_dir = Path(args.out_dir).expanduser()
    writable_folder(out_dir, "OUT_DIR")
    previous = visible(sorted(out_dir.glob("*.tar"))) + [p for p in (out_dir / "stats.json",) if p.exists()]
    if previous and not args.overwrite:
        raise ValueError(f"{out_dir} already holds shards or stats.json ({previous[0].name}, "
                         f"{len(previous)} file(s)): choose an empty OUT_DIR, or --overwrite to replace them")
    stats = write_wds_shards(samples, out_dir, prefix=args.prefix, maxcount=args.maxcount,
                             image_format=args.image_format, resize_to=args.resize,
                             progress=not args.no_progress)
    # the new set replaced the old shards of its names once whole; a shorter one must not leave
    # old shards behind (deleted only now: a crash while writing kept the old set)
    for path in previous:
        if path.name != "stats.json" and str(path) not in stats["shard_paths"]:
            path.unlink()
    print(f"prep-wds: {kind} {source}\n"
          f"  written:    {stats['written']}\n"
          f"  unreadable: {stats['unreadable']}\n"
          f"  shards:     {stats['shards']} in {out_dir}\n"
          f"  stats:      {out_dir / 'stats.json'}")
    if stats["written"] == 0:
        # Lines/images skipped before encoding (malformed lines, uncaptioned images) were logged above.
        print(f"diffengine: error: no sample written from {source}: "
              f"{stats['unreadable']} unreadable image(s), no other usable pair", file=sys.stderr)
        return 1
    return 0
