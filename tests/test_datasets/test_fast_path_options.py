"""The loader's fast paths switched off (fast_tar_reader, memfd_batches) give the same batches."""
import os

import pytest
import torch

from diffengine.datasets import collate, get_skip_counts, shard_reader, shards
from tests.helpers import image_bytes, load, sample, write_tar


def batch_contents(loader) -> list[tuple]:
    """Keys, captions, stream position and pixels of each batch of one pass."""
    return [(b["data_samples"]["keys"], b["inputs"]["text"], b["data_samples"]["stream_position"],
             b["inputs"]["pixel_values"]) for b in loader]


def assert_same_batches(a: list[tuple], b: list[tuple]) -> None:
    assert len(a) == len(b) > 0
    for (*meta_a, pixels_a), (*meta_b, pixels_b) in zip(a, b, strict=True):
        assert meta_a == meta_b
        assert pixels_a.dtype == pixels_b.dtype == torch.uint8 and torch.equal(pixels_a, pixels_b)


def mixed_shards(folder) -> str:
    """Three plain shards with an undecodable image and a sample without caption in each."""
    for i in range(3):
        write_tar(folder / f"s{i}.tar",
                  [sample(f"s{i}k{j}", image=b"junk" if j == 1 else image_bytes(size=(14, 11), seed=10 * i + j))
                   for j in range(5)] + [sample(f"s{i}nocap", None)])
    return f"{folder}/s*.tar"


@pytest.mark.parametrize("num_workers", [0, 2])
def test_without_the_fast_tar_reader_the_batches_are_the_same(tmp_path, monkeypatch, num_workers):
    pattern = mixed_shards(tmp_path)
    # counted: 18 samples with an image, 12 usable, so the epoch runs into a second pass
    kwargs = dict(batch_size=3, shuffle_buffer=6, center_crop=False, seed=2, num_workers=num_workers)
    fast = load(pattern, **kwargs)
    expected = batch_contents(fast)

    def unused(*args, **kwargs):
        raise AssertionError("the fast tar reader was used")

    # module globals reach forked DataLoader workers too
    monkeypatch.setattr(shard_reader, "iter_tar_samples", unused)
    monkeypatch.setattr(shards, "iter_tar_samples", unused)
    slow = load(pattern, fast_tar_reader=False, **kwargs)
    assert len(slow) == len(fast) == 6
    assert_same_batches(batch_contents(slow), expected)
    assert get_skip_counts(slow) == get_skip_counts(fast)
    assert get_skip_counts(slow)["decode_error"] > 0 and get_skip_counts(slow)["missing_caption"] > 0


def test_without_memfd_batches_the_batches_are_the_same(tmp_path):
    if not collate._can_write_shared():
        pytest.skip("memfd batches need Linux and torch's file_descriptor sharing strategy")
    pattern = mixed_shards(tmp_path)
    kwargs = dict(batch_size=3, shuffle_buffer=6, center_crop=False, seed=2, num_workers=2)
    maps = {}
    contents = {}
    for memfd in (False, True):
        contents[memfd] = batch_contents(load(pattern, memfd_batches=memfd, **kwargs))
        assert all(pixels.is_shared() for *_, pixels in contents[memfd])  # from a worker either way
        maps[memfd] = open("/proc/self/maps").read() if os.path.exists("/proc/self/maps") else None
    assert_same_batches(contents[False], contents[True])
    if maps[False] is not None:  # while holding only the batches of memfd_batches=False, then both
        assert "memfd:diffengine-batch" not in maps[False] and "memfd:diffengine-batch" in maps[True]
