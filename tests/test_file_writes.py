"""Files and folders written whole: a failure mid-write leaves the earlier version, never a part."""
import pytest

from diffengine.file_writes import remove_folder, whole_file, whole_folder, write_text_whole


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
