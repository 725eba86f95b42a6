"""Files and folders written whole: a failure mid-write leaves the earlier version, never a part."""
import pytest

from diffengine.file_writes import filled_folder, remove_folder, whole_file, whole_folder, write_text_whole
from tests.helpers import renamed_durably


class Crash(Exception):
    pass


def test_a_file_is_replaced_only_when_written_whole(tmp_path):
    path = tmp_path / "report.json"
    write_text_whole(path, "first")
    with pytest.raises(Crash), whole_file(path) as partial:
        partial.write_text("half of the sec")
        raise Crash
    assert path.read_text() == "first" and [p.name for p in tmp_path.iterdir()] == ["report.json"]
    with whole_file(path) as partial:
        assert partial.name == ".report.partial.json"  # the extension kept, for writers that read it
        partial.write_text("second")
    assert path.read_text() == "second" and [p.name for p in tmp_path.iterdir()] == ["report.json"]


def test_a_folder_is_replaced_only_when_written_whole(tmp_path):
    folder = tmp_path / "bridge"
    with whole_folder(folder) as staging:
        (staging / "weights").write_text("first")
    with pytest.raises(Crash), whole_folder(folder) as staging:
        (staging / "weights").write_text("seco")
        raise Crash
    assert (folder / "weights").read_text() == "first" and [p.name for p in tmp_path.iterdir()] == ["bridge"]
    with whole_folder(folder) as staging:
        (staging / "other").write_text("second")
    assert [p.name for p in folder.iterdir()] == ["other"] and [p.name for p in tmp_path.iterdir()] == ["bridge"]
    remove_folder(folder)
    assert not list(tmp_path.iterdir())


def test_a_folder_the_user_names_is_filled_in_place_with_its_marker_last(tmp_path):
    out = tmp_path / "out"  # kept itself: it may be a mount point, or "."
    out.mkdir()
    with filled_folder(out, "bridge.json") as staging:
        (staging / "adapter").mkdir()
        (staging / "adapter" / "weights").write_text("first")
        (staging / "bridge.json").write_text("{}")
    with pytest.raises(Crash), filled_folder(out, "bridge.json") as staging:
        (staging / "adapter").mkdir()
        raise Crash
    assert sorted(p.name for p in out.iterdir()) == ["adapter", "bridge.json"]
    assert (out / "adapter" / "weights").read_text() == "first"
    with pytest.raises(FileNotFoundError, match="left no bridge.json"), filled_folder(out, "bridge.json"):
        pass
    assert sorted(p.name for p in out.iterdir()) == ["adapter", "bridge.json"]


def test_a_symbolic_link_is_written_through(tmp_path):
    (tmp_path / "README.md").write_text("old")
    (tmp_path / "link.md").symlink_to(tmp_path / "README.md")
    write_text_whole(tmp_path / "link.md", "new")
    assert (tmp_path / "link.md").is_symlink() and (tmp_path / "README.md").read_text() == "new"


def test_what_is_renamed_into_place_reaches_the_disk_first(tmp_path, disk_events):
    path = tmp_path / "report.json"
    with whole_file(path) as partial:
        partial.write_text("whole")
    assert renamed_durably(disk_events, partial, path)

    folder = tmp_path / "bridge"
    with whole_folder(folder) as staging:
        (staging / "adapter").mkdir()
        (staging / "adapter" / "weights").write_text("w")
        (staging / "bridge.json").write_text("{}")
    assert renamed_durably(disk_events, staging, folder,
                           [staging / "adapter", staging / "adapter" / "weights", staging / "bridge.json"])

    out = tmp_path / "out"
    out.mkdir()
    disk_events.clear()
    with filled_folder(out, "bridge.json") as staging:
        (staging / "adapter").mkdir()
        (staging / "adapter" / "weights").write_text("w")
        (staging / "bridge.json").write_text("{}")
    assert renamed_durably(disk_events, staging / "bridge.json", out / "bridge.json")
    # the marker makes the folder usable: it moves in only once every other entry is on the disk
    marker = disk_events.index(("replace", str(staging / "bridge.json"), str(out / "bridge.json")))
    adapter = disk_events.index(("replace", str(staging / "adapter"), str(out / "adapter")))
    assert ("fsync", str(out)) in disk_events[adapter:marker]
    assert ("fsync", str(staging / "adapter" / "weights")) in disk_events[:adapter]
