import io
import json
import tarfile

import numpy as np
import pytest
from PIL import Image

from diffengine.datasets import (
    build_wds_dataloader,
    samples_from_annotation_file,
    samples_from_image_folder,
    write_wds_shards,
)
from tests.helpers import renamed_durably


def save_image(path, size=(24, 16), fmt=None, seed=0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path, format=fmt)


def tar_members(path) -> dict[str, bytes]:
    with tarfile.open(path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}


def captions_via_loader(shards: list[str]) -> dict[str, str]:
    loader = build_wds_dataloader(shards, batch_size=1, resolution=8, num_workers=0, shuffle_buffer=0)
    return {b["data_samples"]["keys"][0]: b["inputs"]["text"][0] for b in loader}


def test_annotation_file_round_trip(tmp_path):
    save_image(tmp_path / "imgs" / "a.jpg")
    save_image(tmp_path / "imgs" / "b.png", fmt="PNG", seed=1)
    save_image(tmp_path / "elsewhere" / "c.jpg", seed=2)
    (tmp_path / "imgs" / "broken.jpg").write_bytes(b"not an image")
    lines = [
        "imgs/a.jpg\ta red thing",
        "",
        "imgs/b.png\t  a png thing  ",
        "no tab on this line",
        f"{tmp_path / 'elsewhere' / 'c.jpg'}\tan absolute path",
        "imgs/missing.jpg\tgone",
        "imgs/broken.jpg\tbroken",
    ]
    (tmp_path / "ann").mkdir()
    annotations = tmp_path / "ann" / "train.txt"
    annotations.write_text("\n".join(line.replace("imgs/", "../imgs/") for line in lines) + "\n")
    samples = list(samples_from_annotation_file(annotations))
    assert [s[2] for s in samples] == ["a red thing", "a png thing", "an absolute path", "gone", "broken"]
    assert samples[0][1] == tmp_path / "ann" / ".." / "imgs" / "a.jpg"

    stats = write_wds_shards(samples, tmp_path / "out", prefix="ann-", maxcount=2, progress=False)
    assert stats["written"] == 3 and stats["unreadable"] == 2 and stats["shards"] == 2
    assert stats["shard_paths"] == [str(tmp_path / "out" / "ann-00000.tar"), str(tmp_path / "out" / "ann-00001.tar")]
    assert json.loads((tmp_path / "out" / "stats.json").read_text()) == stats
    members = tar_members(stats["shard_paths"][0])
    assert sorted(members) == ["000000000.jpg", "000000000.json", "000000000.txt",
                               "000000001.jpg", "000000001.json", "000000001.txt"]
    record = json.loads(members["000000001.json"])
    assert record["caption"] == "a png thing" and record["key"] == "000000001"
    assert (record["width"], record["height"], record["original_width"], record["original_height"]) == (24, 16, 24, 16)
    assert record["source"].endswith("b.png")
    assert Image.open(io.BytesIO(members["000000001.jpg"])).format == "JPEG"  # png re-encoded as jpg
    assert captions_via_loader(stats["shard_paths"]) == {
        "000000000": "a red thing", "000000001": "a png thing", "000000002": "an absolute path"}


def test_text_that_is_not_utf8_is_named(tmp_path, caplog):
    folder = tmp_path / "folder"
    save_image(folder / "one.jpg")
    (folder / "one.txt").write_text("first caption")
    save_image(folder / "latin.jpg")
    (folder / "latin.txt").write_bytes("caf\u00e9".encode("latin-1"))
    (folder / "broken.jpg").write_bytes(b"not an image")
    (folder / "broken.txt").write_text("broken")
    with caplog.at_level("WARNING"):
        samples = list(samples_from_image_folder(folder))
        stats = write_wds_shards(samples, tmp_path / "out", progress=False)
    # one caption file in another encoding skips its image, not the run, and names the file
    assert [s[2] for s in samples] == ["broken", "first caption"] and stats["written"] == 1
    warnings = [record.getMessage() for record in caplog.records]
    assert f"{folder}: skipped 1 image(s) whose .txt caption is not UTF-8 text, e.g. {folder / 'latin.txt'}" in warnings
    assert any(message.startswith(f"unreadable image {folder / 'broken.jpg'} (key 000000000): ")
               for message in warnings)
    annotations = tmp_path / "train.txt"
    annotations.write_bytes(b"one.jpg\tfine\n" + "latin.jpg\tcaf\u00e9\n".encode("latin-1"))
    with pytest.raises(ValueError, match=rf"^{annotations}:2: not UTF-8 text \(invalid continuation byte\): "
                                         "save the annotation file as UTF-8$"):
        list(samples_from_annotation_file(annotations))


def test_image_folder_round_trip(tmp_path):
    folder = tmp_path / "folder"
    save_image(folder / "one.jpg")
    (folder / "one.txt").write_text("first caption\n")
    save_image(folder / "nested" / "two.PNG", fmt="PNG")
    (folder / "nested" / "two.txt").write_text("second caption")
    save_image(folder / "uncaptioned.jpg")
    save_image(folder / "blank.jpg")
    (folder / "blank.txt").write_text("   ")
    (folder / "corrupt.jpg").write_bytes(b"\xff\xd8\xff junk")
    (folder / "corrupt.txt").write_text("corrupt caption")
    (folder / "notes.txt").write_text("not an image caption")
    samples = list(samples_from_image_folder(folder))
    assert [(s[2], s[3]["source"]) for s in samples] == [
        ("corrupt caption", "corrupt.jpg"), ("second caption", "nested/two.PNG"), ("first caption", "one.jpg")]
    stats = write_wds_shards(samples, tmp_path / "out", image_format="png", progress=False)
    assert (stats["written"], stats["unreadable"], stats["shards"]) == (2, 1, 1)
    members = tar_members(stats["shard_paths"][0])
    assert sorted(n for n in members if n.endswith(".png")) == ["000000001.png", "000000002.png"]
    assert members["000000001.png"] == (folder / "nested" / "two.PNG").read_bytes()  # same format: kept as is
    assert captions_via_loader(stats["shard_paths"]) == {"000000001": "second caption", "000000002": "first caption"}


def test_inputs_as_images_and_bytes_with_resize_and_meta(tmp_path):
    big = Image.new("RGBA", (200, 100), (255, 0, 0, 255))
    buffer = io.BytesIO()
    Image.new("L", (40, 30), 128).save(buffer, format="JPEG")
    samples = [("big", big, "big one", {"punsafe": 0.2, "original_width": 4000}),
               ("small", buffer.getvalue(), "small one", None),
               ("bad", b"\x00\x01", "bad bytes", None)]
    stats = write_wds_shards(samples, tmp_path, resize_to=50, progress=False)
    assert (stats["written"], stats["unreadable"]) == (2, 1)
    members = tar_members(stats["shard_paths"][0])
    big_record, small_record = json.loads(members["big.json"]), json.loads(members["small.json"])
    assert (big_record["width"], big_record["height"]) == (100, 50)
    assert big_record["original_width"] == 4000 and big_record["original_height"] == 100  # meta wins
    assert big_record["punsafe"] == 0.2
    assert Image.open(io.BytesIO(members["big.jpg"])).size == (100, 50)
    assert (small_record["width"], small_record["height"]) == (40, 30)  # never upscaled
    assert members["small.jpg"] == buffer.getvalue()
    assert members["big.txt"] == b"big one"


def test_bad_key_and_format_raise(tmp_path):
    with pytest.raises(ValueError, match="key"):
        write_wds_shards([("a.b", Image.new("RGB", (4, 4)), "x", None)], tmp_path, progress=False)
    with pytest.raises(ValueError, match="image_format"):
        write_wds_shards([], tmp_path, image_format="gif", progress=False)


def test_progress_bar(tmp_path, capsys):
    write_wds_shards([("k", Image.new("RGB", (4, 4)), "x", None)], tmp_path, progress=True)
    assert "writing shards" in capsys.readouterr().err
    write_wds_shards([("k", Image.new("RGB", (4, 4)), "x", None)], tmp_path, progress=False)
    assert capsys.readouterr().err == ""


def test_shards_are_reproducible_byte_for_byte(tmp_path):
    samples = [(f"k{i}", Image.new("RGB", (8, 8), (i, 0, 0)), f"caption {i}", None) for i in range(3)]
    for out in ("a", "b"):
        write_wds_shards(samples, tmp_path / out, progress=False)
    assert (tmp_path / "a" / "00000.tar").read_bytes() == (tmp_path / "b" / "00000.tar").read_bytes()
    with tarfile.open(tmp_path / "a" / "00000.tar") as tar:
        assert all(not member.pax_headers for member in tar.getmembers())


def test_a_failure_while_writing_leaves_only_whole_shards(tmp_path):
    def samples(fail_after: int):
        for index in range(5):
            if index == fail_after:
                raise RuntimeError("the source went away")
            yield f"{index:03d}", Image.new("RGB", (8, 8), (index, 0, 0)), f"caption {index}", None

    write_wds_shards(samples(fail_after=-1), tmp_path, maxcount=2, progress=False)
    before = {path.name: path.read_bytes() for path in tmp_path.iterdir()}
    with pytest.raises(RuntimeError, match="went away"):
        write_wds_shards(samples(fail_after=3), tmp_path, maxcount=2, image_format="png", progress=False)
    # shard 0 of the new set was finished, shard 1 was not: the earlier set stays as it was, no part left
    assert {path.name: path.read_bytes() for path in tmp_path.iterdir()} == before
    write_wds_shards(samples(fail_after=-1), tmp_path, maxcount=2, image_format="png", progress=False)
    assert sorted(tar_members(tmp_path / "00000.tar")) == ["000.json", "000.png", "000.txt", "001.json", "001.png",
                                                           "001.txt"]


def test_every_shard_reaches_the_disk_before_any_takes_its_name(tmp_path, disk_events):
    samples = ((f"{i:03d}", Image.new("RGB", (8, 8)), "a caption", None) for i in range(3))
    write_wds_shards(samples, tmp_path, maxcount=2, progress=False)
    first_rename = next(i for i, event in enumerate(disk_events) if event[0] == "replace")
    assert {("fsync", str(tmp_path / f".0000{i}.partial.tar")) for i in (0, 1)} <= set(disk_events[:first_rename])
    assert all(renamed_durably(disk_events, tmp_path / f".0000{i}.partial.tar", tmp_path / f"0000{i}.tar")
               for i in (0, 1))
