"""The loader's options tried on the first shards before any model loads (``unusable_samples_reason``)."""
import pytest

from diffengine.datasets.sample_check import PROBE_SHARDS, UNREADABLE_KINDS, skip_reasons, unusable_samples_reason
from diffengine.datasets.skip_accounting import SKIP_KINDS
from diffengine.datasets.wds_loader import shard_dataset
from tests.helpers import LOADER_RES, good_shards, sample, write_tar


def reason(urls, **options):
    return unusable_samples_reason(urls, shard_dataset(LOADER_RES, **options))


def test_usable_shards_pass(tmp_path):
    assert reason(good_shards(tmp_path, 2, 3)) is None


@pytest.mark.parametrize("options, expected", [
    (dict(image_keys="png;webp"), "6 with no image file of image_keys='png;webp'"),
    (dict(caption_key="caption", caption_json_fields=["title"]),
     "6 with no caption: no .caption file (caption_key) and no title field in the .json (caption_json_fields)"),
    (dict(min_caption_length=100), "6 with a caption shorter than min_caption_length=100"),
])
def test_options_that_reject_every_sample_are_named(tmp_path, options, expected):
    urls = good_shards(tmp_path, 2, 3)
    found = reason(urls, **options)
    assert found.startswith(f"none of the 6 samples of the first 2 shard(s) is usable ({expected}); "
                            f"e.g. {urls[0]}'s first sample holds .jpg, .txt")


def test_mixed_reasons_are_counted_by_kind(tmp_path):
    url = write_tar(tmp_path / "s.tar", [sample("a", caption=None), sample("b", image=None),
                                         sample("c", image=b"not an image")])
    assert reason([url]).startswith("none of the 3 samples of the first 1 shard(s) is usable (1 with no image file "
                                    "of image_keys='jpg;jpeg;png;webp'; 1 with no caption: no .txt file")
    assert "; 1 with an image file that does not decode)" in reason([url])


def test_one_usable_sample_in_the_probed_shards_passes(tmp_path):
    bad = [write_tar(tmp_path / f"bad{i}.tar", [sample(f"b{i}", caption=None)]) for i in range(PROBE_SHARDS - 1)]
    good = good_shards(tmp_path, 1, 1)
    assert reason([*bad, *good]) is None
    # a usable shard after the probed ones is not read: the options are blamed
    bad.append(write_tar(tmp_path / "bad_last.tar", [sample("c", caption=None)]))
    assert reason([*bad, *good]).startswith(f"none of the {PROBE_SHARDS} samples of the first {PROBE_SHARDS} shard(s)")


def test_unreadable_or_empty_shards_are_left_to_the_loader(tmp_path):
    (tmp_path / "empty.tar").write_bytes(b"")
    no_caption = write_tar(tmp_path / "no_caption.tar", [sample("a", caption=None)])
    # a corrupt shard among rejected ones: data the loader skips and reports, not the options' fault
    assert reason([str(tmp_path / "empty.tar"), no_caption]) is None
    assert reason([str(tmp_path / "absent.tar")]) is None
    assert reason([write_tar(tmp_path / "nothing.tar", [])]) is None
    # unreadable probed shards with more to come: the loader may find readable ones
    assert reason([str(tmp_path / "empty.tar")] * (PROBE_SHARDS + 1)) is None


def test_a_source_whose_every_shard_is_unreadable_is_refused(tmp_path):
    (tmp_path / "notes.tar").write_text('{"not": "a tar archive"}')
    assert reason([str(tmp_path / "notes.tar")]) == (
        f"none of its 1 shard(s) reads as a tar archive, e.g. {tmp_path / 'notes.tar'}")


def test_probing_prints_no_skip_warnings(tmp_path, capsys, caplog):
    reason(good_shards(tmp_path, 1, 2), image_keys="png")
    assert "skipped" not in capsys.readouterr().err and not caplog.records


def test_every_kind_of_rejected_sample_is_explained():
    # a new filter or skip kind needs its words here, or the check would fail with a KeyError
    assert set(skip_reasons(shard_dataset(LOADER_RES).spec)) == set(SKIP_KINDS) - set(UNREADABLE_KINDS)
