"""``prep-wds`` end to end: argparse options -> run_prep_wds -> shards read back by the loader."""
import argparse
import io
import json
import tarfile

import numpy as np
import pytest
from PIL import Image

from diffengine.datasets import build_wds_dataloader
from diffengine.tools.prep_wds import add_prep_wds_arguments, run_prep_wds


def prep_wds(*argv: str) -> int:
    """Run the subcommand as the CLI would: parse argv with the provided options, then run."""
    parser = argparse.ArgumentParser(prog="diffengine prep-wds")
    add_prep_wds_arguments(parser)
    return run_prep_wds(parser.parse_args([*map(str, argv), "--no-progress"]))


def save_image(path, size, seed=0, fmt=None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format=fmt)


def tar_members(path) -> dict[str, bytes]:
    with tarfile.open(path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}


def captions_via_loader(pattern: str) -> dict[str, str]:
    loader = build_wds_dataloader(pattern, batch_size=1, resolution=8, num_workers=0, shuffle_buffer=0)
    return {b["data_samples"]["keys"][0]: b["inputs"]["text"][0] for b in loader}


def test_annotation_file(tmp_path, capsys):
    save_image(tmp_path / "imgs" / "a.jpg", (40, 30))
    save_image(tmp_path / "imgs" / "b.png", (30, 60), seed=1, fmt="PNG")
    save_image(tmp_path / "imgs" / "c.jpg", (16, 12), seed=2)
    (tmp_path / "imgs" / "broken.jpg").write_bytes(b"not an image")
    annotations = tmp_path / "train.tsv"
    annotations.write_text("imgs/a.jpg\ta wide photo\nimgs/broken.jpg\tbroken\n"
                           "imgs/b.png\ta tall png\n\nimgs/c.jpg\ta small photo\n")
    out = tmp_path / "shards"

    assert prep_wds(annotations, out, "--maxcount", "2", "--resize", "20", "--prefix", "ann-") == 0

    stats = json.loads((out / "stats.json").read_text())
    assert stats == {"written": 3, "unreadable": 1, "shards": 2,
                     "shard_paths": [str(out / "ann-00000.tar"), str(out / "ann-00001.tar")]}
    members = {**tar_members(out / "ann-00000.tar"), **tar_members(out / "ann-00001.tar")}
    # Shorter side shrunk to 20 with the aspect kept, the PNG re-encoded as the default jpg, the
    # image already under 20 px not enlarged; keys number annotation lines, so the unreadable
    # line's 000000001 is unused.
    sizes = {key: Image.open(io.BytesIO(members[f"{key}.jpg"])).size
             for key in ("000000000", "000000002", "000000003")}
    assert sizes == {"000000000": (27, 20), "000000002": (20, 40), "000000003": (16, 12)}
    record = json.loads(members["000000002.json"])
    assert (record["original_width"], record["original_height"], record["width"], record["height"]) == (30, 60, 20, 40)
    assert captions_via_loader(f"{out}/ann-{{00000..00001}}.tar") == {
        "000000000": "a wide photo", "000000002": "a tall png", "000000003": "a small photo"}
    summary = capsys.readouterr().out
    assert "written:    3" in summary and "unreadable: 1" in summary and "shards:     2" in summary
    assert str(out / "stats.json") in summary


def test_image_folder(tmp_path, capsys):
    folder = tmp_path / "photos"
    save_image(folder / "cat.png", (24, 16), fmt="PNG")
    (folder / "cat.txt").write_text("a cat\n")
    save_image(folder / "nested" / "dog.png", (24, 16), seed=1, fmt="PNG")
    (folder / "nested" / "dog.txt").write_text("a dog")
    (folder / "bad.png").write_bytes(b"\x89PNG truncated")
    (folder / "bad.txt").write_text("unreadable")
    save_image(folder / "nocaption.png", (24, 16), seed=2, fmt="PNG")  # skipped: no caption file
    out = tmp_path / "out"

    assert prep_wds(folder, out, "--format", "png") == 0

    stats = json.loads((out / "stats.json").read_text())
    assert (stats["written"], stats["unreadable"], stats["shards"]) == (2, 1, 1)
    members = tar_members(out / "00000.tar")
    # keys follow the sorted image paths: bad.png (unreadable) holds 000000000
    assert sorted(members) == ["000000001.json", "000000001.png", "000000001.txt",
                               "000000002.json", "000000002.png", "000000002.txt"]
    # PNG in, PNG out, no resize: the original bytes are kept
    assert members["000000001.png"] == (folder / "cat.png").read_bytes()
    assert json.loads(members["000000002.json"])["source"] == "nested/dog.png"
    assert captions_via_loader(str(out / "00000.tar")) == {"000000001": "a cat", "000000002": "a dog"}
    assert "image folder" in capsys.readouterr().out


def test_missing_source_raises(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        prep_wds(tmp_path / "nowhere.txt", tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("prefix", ["sub/x", ".hidden-"])
def test_a_prefix_that_is_not_a_file_name_prefix_is_refused_before_writing(tmp_path, prefix):
    save_image(tmp_path / "imgs" / "a.jpg", (40, 30))
    (tmp_path / "imgs" / "a.txt").write_text("a caption")
    with pytest.raises(ValueError, match=rf"^--prefix '{prefix}': a shard file name prefix, without '/' and not "
                                         r"starting with '\.'"):
        prep_wds(tmp_path / "imgs", tmp_path / "out", "--prefix", prefix)
    assert not (tmp_path / "out").exists()


def test_an_out_dir_that_is_a_file_is_refused_before_reading(tmp_path):
    (tmp_path / "imgs").mkdir()
    (tmp_path / "afile").write_text("not a folder")
    with pytest.raises(ValueError, match=r"^OUT_DIR .*afile: cannot create this folder \(File exists\)$"):
        prep_wds(tmp_path / "imgs", tmp_path / "afile")


def test_all_unreadable_returns_1(tmp_path, capsys):
    (tmp_path / "broken.jpg").write_bytes(b"garbage")
    annotations = tmp_path / "ann.txt"
    annotations.write_text("broken.jpg\tbroken\nmissing.jpg\tgone\n")

    assert prep_wds(annotations, tmp_path / "out") == 1

    assert json.loads((tmp_path / "out" / "stats.json").read_text())["unreadable"] == 2
    assert "no sample written" in capsys.readouterr().err


@pytest.mark.parametrize("option", [["--maxcount", "0"], ["--resize", "-5"], ["--format", "gif"]])
def test_bad_options_rejected_by_parser(tmp_path, option):
    with pytest.raises(SystemExit):
        prep_wds(tmp_path, tmp_path / "out", *option)


def test_an_output_folder_with_shards_is_refused_unless_overwritten(tmp_path):
    folder = tmp_path / "photos"
    for index in range(3):
        save_image(folder / f"{index}.png", (16, 16), seed=index, fmt="PNG")
        (folder / f"{index}.txt").write_text(f"photo {index}")
    out = tmp_path / "out"
    assert prep_wds(folder, out, "--maxcount", "1") == 0
    assert sorted(p.name for p in out.glob("*.tar")) == ["00000.tar", "00001.tar", "00002.tar"]
    with pytest.raises(ValueError, match=r"already holds shards or stats.json \(00000.tar, 4 file\(s\)\).*--overwrite"):
        prep_wds(folder, out, "--maxcount", "2")
    assert prep_wds(folder, out, "--maxcount", "2", "--overwrite") == 0
    # no shard of the earlier set is left to mix with the new one
    assert sorted(p.name for p in out.glob("*.tar")) == ["00000.tar", "00001.tar"]
    assert json.loads((out / "stats.json").read_text())["shards"] == 2
