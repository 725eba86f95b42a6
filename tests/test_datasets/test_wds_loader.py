import functools
import gzip
import http.server
import io
import os
import shutil
import tarfile
import threading

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from diffengine.contracts import STREAM_POSITION_KEY
from diffengine.datasets import ImageTransform, get_skip_counts, tar_reader
from diffengine.datasets.collate import collate_batch
from tests.helpers import LOADER_RES, good_shards, image_bytes, keys_of, load, sample, write_tar


def test_batch_structure_length_and_mmengine_attributes(tmp_path):
    shards = good_shards(tmp_path, 2, 6)
    loader = load(f"{tmp_path}/s*.tar", batch_size=4, shuffle_buffer=100)  # 12 samples counted
    assert isinstance(loader, DataLoader) and len(loader) == 3
    assert hasattr(loader.batch_sampler, "sampler") and hasattr(loader.dataset, "set_epoch")
    batches = list(loader)
    assert len(batches) == 3
    for batch in batches:
        assert set(batch) == {"inputs", "data_samples"}
        assert set(batch["inputs"]) == {"pixel_values", "text", "original_size", "crop_top_left"}
        assert all(batch["inputs"][k].shape == (4, 2) for k in ("original_size", "crop_top_left"))
        assert set(batch["data_samples"]) == {"keys", STREAM_POSITION_KEY}
        pixels = batch["inputs"]["pixel_values"]
        assert pixels.shape == (4, 3, LOADER_RES, LOADER_RES) and pixels.dtype == torch.uint8
        assert batch["inputs"]["text"] == [f"caption {k}" for k in batch["data_samples"]["keys"]]
    keys = [k for b in batches for k in b["data_samples"]["keys"]]
    expected = [f"s{i}k{j}" for i in range(2) for j in range(6)]
    assert sorted(keys) == sorted(expected)
    assert keys != expected and keys != expected[6:] + expected[:6]  # the buffer shuffled samples
    assert loader.dataset.metainfo["num_shards"] == len(shards)  # the glob found both


@pytest.mark.parametrize("strategy", ["file_descriptor", "file_system"])
def test_worker_batches_equal_in_process_batches(tmp_path, strategy):
    # One worker reads the same stream as the main process; only the collate path differs:
    # numpy in the main process; in a worker, shared memory written as a memfd file, or torch's
    # own shared memory when tensors are passed by file name.
    good_shards(tmp_path, 2, 5)
    default_strategy = torch.multiprocessing.get_sharing_strategy()
    torch.multiprocessing.set_sharing_strategy(strategy)
    try:
        in_process, in_worker = (list(load(f"{tmp_path}/s*.tar", batch_size=3, shuffle_buffer=4, num_workers=n))
                                 for n in (0, 1))
        maps = open("/proc/self/maps").read() if os.path.exists("/proc/self/maps") else None
    finally:
        torch.multiprocessing.set_sharing_strategy(default_strategy)
    assert len(in_process) == len(in_worker) == 3
    for a, b in zip(in_process, in_worker, strict=True):
        assert a["data_samples"]["keys"] == b["data_samples"]["keys"]
        assert b["inputs"]["pixel_values"].dtype == torch.uint8 and b["inputs"]["pixel_values"].is_shared()
        assert torch.equal(a["inputs"]["pixel_values"], b["inputs"]["pixel_values"])
    if maps is not None and hasattr(os, "memfd_create"):  # the batches this process holds
        assert ("memfd:diffengine-batch" in maps) == (strategy == "file_descriptor")


def test_worker_collate_of_more_images_than_one_write_call_takes():
    # Linux takes at most 1024 buffers per writev: a worker batch of 1025 images still arrives whole
    samples = [{"pixel_values": torch.full((3, 2, 2), i % 251, dtype=torch.uint8), "text": "t",
                "__key__": str(i), "__position__": i + 1} for i in range(1025)]
    batch = next(iter(DataLoader(samples, batch_size=1025, collate_fn=collate_batch, num_workers=1)))
    assert torch.equal(batch["inputs"]["pixel_values"], torch.stack([s["pixel_values"] for s in samples]))


@pytest.mark.parametrize("num_workers", [0, 2, 3])
def test_resume_from_continues_the_epoch_exactly_without_decoding(tmp_path, monkeypatch, num_workers):
    # Undecodable images among the samples, random crops and flips, 7 batches dealt to 2 or 3
    # workers unevenly, and a second pass (20 usable samples for 21): what follows the fast-forward
    # must still match an uninterrupted pass pixel for pixel.
    for i in range(4):
        images = [b"junk" if j == 2 else image_bytes(size=(14, 11), seed=10 * i + j) for j in range(6)]
        write_tar(tmp_path / f"s{i}.tar", [sample(f"s{i}k{j}", image=image) for j, image in enumerate(images)])
    kwargs = dict(batch_size=3, shuffle_buffer=8, num_workers=num_workers, num_samples_per_epoch=21,
                  center_crop=False, seed=3)
    loader = load(f"{tmp_path}/s*.tar", **kwargs)
    loader.dataset.set_epoch(1)
    full = list(loader)
    slots = max(1, num_workers)
    transform = ImageTransform.crop_and_flip
    assert len(full) == 7
    for trained in range(1, 7):
        positions = [0] * slots
        for index, batch in enumerate(full[:trained]):
            positions[index % slots] = batch["data_samples"]["stream_position"]
        resumed = load(f"{tmp_path}/s*.tar", **kwargs)
        transformed = []
        monkeypatch.setattr(ImageTransform, "crop_and_flip", lambda self, image, rng=None, seen=transformed:
                            seen.append(1) or transform(self, image, rng))
        resumed.dataset.set_epoch(1)
        resumed.dataset.resume_from(1, trained, positions)
        rest = list(resumed)
        assert [b["data_samples"]["keys"] for b in rest] == [b["data_samples"]["keys"] for b in full[trained:]]
        assert all(torch.equal(a["inputs"]["pixel_values"], b["inputs"]["pixel_values"])
                   for a, b in zip(rest, full[trained:], strict=True))
        if num_workers == 0:  # counted in this process: only the images of the batches left
            assert len(transformed) == 3 * (7 - trained)
    with pytest.raises(ValueError, match="stream positions"):
        loader.dataset.resume_from(1, 1, [0] * (slots + 1))


def test_shards_as_brace_pattern_list_and_pipe(tmp_path):
    good_shards(tmp_path, 3, 2)
    brace = keys_of(load(f"{tmp_path}/s{{0..2}}.tar"))
    listed = keys_of(load([f"{tmp_path}/s0.tar", f"{tmp_path}/s{{1,2}}.tar"]))
    piped = keys_of(load(f"pipe:cat {tmp_path}/s{{0..2}}.tar", num_samples_per_epoch=6))
    assert sorted(brace) == sorted(listed) == sorted(piped) == [f"s{i}k{j}" for i in range(3) for j in range(2)]



def test_compressed_and_gnu_shards_are_read_and_counted(tmp_path, monkeypatch):
    # plain ustar shards take the fast reader; a gzip shard goes through webdataset's tarfile path
    from diffengine.datasets import shard_reader
    fast = []
    monkeypatch.setattr(shard_reader, "iter_tar_samples",  # the shards read, not those counted
                        lambda stream, url, read_data=True, **kwargs: (read_data and fast.append(url))
                        or tar_reader.iter_tar_samples(stream, url, read_data, **kwargs))
    plain, other = good_shards(tmp_path, 2, 3)
    with open(other, "rb") as source, gzip.open(tmp_path / "s1.tar.gz", "wb") as target:
        target.write(source.read())
    with tarfile.open(plain) as tar, tarfile.open(tmp_path / "gnu.tar", "w", format=tarfile.GNU_FORMAT) as gnu:
        for member in tar:
            gnu.addfile(member, tar.extractfile(member))
    for shards in ([plain, str(tmp_path / "s1.tar.gz")], [str(tmp_path / "gnu.tar"), other]):
        loader = load(shards)  # the epoch length counted from both shards' headers
        assert sorted(keys_of(loader)) == [f"s{i}k{j}" for i in range(2) for j in range(3)]
        assert not any(get_skip_counts(loader).values())
    assert sorted(fast) == sorted([plain, str(tmp_path / "gnu.tar"), other])

@pytest.mark.skipif(shutil.which("curl") is None, reason="webdataset reads http(s) shards through curl")
def test_http_shards_and_a_missing_url(tmp_path):
    good_shards(tmp_path, 3, 2)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *args: None
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        base = f"http://127.0.0.1:{server.server_address[1]}"
        loader = load(f"{base}/s{{0..2}}.tar", num_samples_per_epoch=6, batch_size=2)
        keys = keys_of(loader)
        missing = load(f"{base}/gone{{0..1}}.tar", num_samples_per_epoch=2)  # HTTP 404
        with pytest.raises(RuntimeError, match="no usable sample"):
            keys_of(missing)
        server.shutdown()
    assert sorted(keys) == [f"s{i}k{j}" for i in range(3) for j in range(2)]
    assert not any(get_skip_counts(loader).values())
    assert get_skip_counts(missing)["tar_error"] == 2


def test_exact_mode_splits_ranks_disjointly(tmp_path, monkeypatch):
    pattern = f"{tmp_path}/s{{0..3}}.tar"
    good_shards(tmp_path, 4, 5)
    everything = {f"s{i}k{j}" for i in range(4) for j in range(5)}
    splits = []
    for epoch in range(3):
        per_rank = []
        for rank in range(2):
            loader = load(pattern, batch_size=5, num_samples_per_epoch=20, rank=rank, world_size=2, seed=7)
            assert len(loader) == 2
            loader.sampler.set_epoch(epoch)  # the alias MMEngine calls
            assert loader.dataset.epoch == epoch
            per_rank.append(keys_of(loader))
        assert all(len(keys) == len(set(keys)) == 10 for keys in per_rank)
        assert set(per_rank[0]).isdisjoint(per_rank[1]) and set(per_rank[0]) | set(per_rank[1]) == everything
        splits.append(per_rank)
    assert splits[1] != splits[0] or splits[2] != splits[0]  # the epoch reseeds the shard order
    # Without explicit rank/world_size the environment decides.
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert keys_of(load(pattern, batch_size=5, num_samples_per_epoch=20, seed=7)) == splits[0][1]


def test_resampled_mode_length_and_seeding(tmp_path):
    pattern = f"{tmp_path}/s{{0..2}}.tar"
    good_shards(tmp_path, 3, 4)

    def keys(**kwargs):
        loader = load(pattern, resampled=True, batch_size=4, num_samples_per_epoch=24, shuffle_buffer=8, **kwargs)
        batches = list(loader)
        assert len(batches) == len(loader)
        return [k for b in batches for k in b["data_samples"]["keys"]]

    base = keys(seed=1)
    assert len(base) == 24 and keys(seed=1) == base
    assert keys(seed=2) != base
    rank0, rank1 = keys(seed=1, rank=0, world_size=2), keys(seed=1, rank=1, world_size=2)
    assert len(rank0) == len(rank1) == 12 and rank0 != rank1
    loader = load(pattern, resampled=True, batch_size=4, num_samples_per_epoch=24, shuffle_buffer=8, seed=1)
    loader.dataset.set_epoch(1)
    assert keys_of(loader) != base
    loader.dataset.set_epoch(0)
    assert keys_of(loader) == base


FILTER_SAMPLES = {
    "small": {"original_width": 100, "original_height": 300},
    "fallback": {"width": 200, "height": 400},
    "wm": {"pwatermark": 0.9},
    "unsafe": {"punsafe": 0.95},
    "wide": {"original_width": 1000, "original_height": 400},
    "short": {},
    "plain": {},
    "ok": {"original_width": 512, "original_height": 512, "pwatermark": 0.1, "punsafe": 0.1, "width": 64},
}


@pytest.mark.parametrize("kwargs,dropped,kind", [
    ({"min_original_size": 256}, {"small", "fallback"}, "filtered_min_size"),
    ({"max_pwatermark": 0.5}, {"wm"}, "filtered_pwatermark"),
    ({"max_punsafe": 0.5}, {"unsafe"}, "filtered_punsafe"),
    ({"aspect_ratio_range": (0.5, 2.0)}, {"wide", "small"}, "filtered_aspect_ratio"),
    ({"min_caption_length": 5}, {"short"}, "filtered_caption_length"),
])
def test_metadata_filters(tmp_path, kwargs, dropped, kind):
    shard = write_tar(tmp_path / "f.tar", [sample(k, "ab" if k == "short" else f"caption of {k}", meta=m)
                                           for k, m in FILTER_SAMPLES.items()])
    kept = set(FILTER_SAMPLES) - dropped
    loader = load(shard, num_samples_per_epoch=len(kept), **kwargs)
    keys = keys_of(loader)
    assert len(keys) == len(kept) and set(keys) == kept
    assert {k: v for k, v in get_skip_counts(loader).items() if v} == {kind: len(dropped)}


def test_metadata_filter_runs_before_decoding(tmp_path):
    shard = write_tar(tmp_path / "f.tar", [sample("wm", image=b"not an image", meta={"pwatermark": 0.99}),
                                           sample("ok")])
    loader = load(shard, num_samples_per_epoch=1, max_pwatermark=0.5)
    assert keys_of(loader) == ["ok"]
    counts = get_skip_counts(loader)
    assert counts["filtered_pwatermark"] == 1 and counts["decode_error"] == 0


def test_captions_from_txt_then_json(tmp_path):
    shard = write_tar(tmp_path / "c.tar", [
        sample("txt", "from txt", meta={"caption": "from json"}),
        sample("json", None, meta={"caption": " from json "}),
        sample("text", None, meta={"text": "from text field"}),
        sample("blank", "   ", meta={"caption": "json rescues blank txt"}),
    ])
    loader = load(shard, num_samples_per_epoch=4, batch_size=4)
    batch = next(iter(loader))
    assert dict(zip(batch["data_samples"]["keys"], batch["inputs"]["text"], strict=True)) == {
        "txt": "from txt", "json": "from json", "text": "from text field", "blank": "json rescues blank txt"}
    custom = load(shard, num_samples_per_epoch=1, caption_key="nothing", caption_json_fields=("text",))
    assert [b["inputs"]["text"] for b in custom] == [["from text field"]]
    assert get_skip_counts(custom)["missing_caption"] == 2  # "txt" and "json", read before "text"


def test_image_formats_and_modes(tmp_path):
    transparent = Image.new("RGBA", (12, 12), (0, 0, 0, 0))
    buffer = io.BytesIO()
    transparent.save(buffer, format="PNG")
    shard = write_tar(tmp_path / "m.tar", [
        sample("cmyk", image=image_bytes("JPEG", "CMYK")),
        sample("gray", image=image_bytes("JPEG", "L"), ext="jpeg"),
        sample("palette", image=image_bytes("PNG", "P"), ext="png"),
        sample("alpha", image=buffer.getvalue(), ext="png"),
        sample("la", image=image_bytes("PNG", "LA"), ext="png"),
        sample("webp", image=image_bytes("WEBP"), ext="webp"),
    ])
    loader = load(shard, num_samples_per_epoch=6, batch_size=6)
    batch = next(iter(loader))
    assert sorted(batch["data_samples"]["keys"]) == ["alpha", "cmyk", "gray", "la", "palette", "webp"]
    alpha = batch["inputs"]["pixel_values"][batch["data_samples"]["keys"].index("alpha")]
    assert torch.all(alpha == 255)  # transparent pixels are composited onto white
    assert not any(get_skip_counts(loader).values())


def test_exif_orientation_is_applied(tmp_path):
    # Stored landscape, red on top; orientation 6 shows it turned 90 degrees clockwise, so the
    # displayed portrait image is red on its right half.
    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:10, :, 0] = 255
    pixels[10:, :, 2] = 255
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=95, exif=exif)
    shard = write_tar(tmp_path / "r.tar", [sample("rotated", image=buffer.getvalue())])
    out = next(iter(load(shard, num_samples_per_epoch=1, random_flip=False)))["inputs"]["pixel_values"][0]
    red, blue = out[0].float(), out[2].float()
    assert red[:, LOADER_RES // 2 + 1:].mean() > 200 and blue[:, LOADER_RES // 2 + 1:].mean() < 50
    assert blue[:, :LOADER_RES // 2 - 1].mean() > 200 and red[:, :LOADER_RES // 2 - 1].mean() < 50


def test_bad_samples_are_skipped_and_counted(tmp_path):
    jpeg = image_bytes(size=(64, 48))
    shard = write_tar(tmp_path / "bad.tar", [
        sample("garbage", image=b"\xff\xd8 definitely not a jpeg"),
        sample("cut", image=jpeg[: len(jpeg) // 2]),
        sample("noimage", image=None),
        sample("nocaption", None),
        sample("empty", "  \n"),
        sample("badjson", meta=None) | {"json": b"{not json"},
        sample("good0"), sample("good1"), sample("good2"),
    ])
    loader = load(shard, num_samples_per_epoch=3)
    assert keys_of(loader) == ["good0", "good1", "good2"]
    assert {k: v for k, v in get_skip_counts(loader).items() if v} == {
        "decode_error": 2, "missing_image": 1, "missing_caption": 1, "empty_caption": 1, "json_error": 1}


def _cut_tar(path, at: str) -> str:
    """Truncate a shard of samples k0..k3 within the third sample's first member."""
    with tarfile.open(path) as tar:
        member = next(m for m in tar.getmembers() if m.name == "k2.jpg")
    offset = {"boundary": member.offset, "header": member.offset + 700, "data": member.offset_data + 100}[at]
    with open(path, "r+b") as stream:
        stream.truncate(offset)
    return path


@pytest.mark.parametrize("at", ["boundary", "header", "data"])
def test_truncated_tar_is_counted_once(tmp_path, at):
    shard = _cut_tar(write_tar(tmp_path / "t.tar", [sample(f"k{i}") for i in range(4)]), at)
    # One more sample than a pass holds: the second pass starts over without hitting the cut again.
    loader = load(shard, num_samples_per_epoch=3)
    assert keys_of(loader) == ["k0", "k1", "k0"]
    assert {k: v for k, v in get_skip_counts(loader).items() if v} == {"tar_error": 1}


def test_no_usable_sample_raises_after_counting_every_shard(tmp_path):
    shards = [
        write_tar(tmp_path / "undecodable.tar", [sample(f"u{i}", image=b"junk") for i in range(2)]),
        _cut_tar(write_tar(tmp_path / "cut.tar", [sample(f"k{i}", image=b"junk") for i in range(4)]), "header"),
        str(tmp_path / "vanishing.tar"),
    ]
    (tmp_path / "garbage.tar").write_bytes(b"this is not a tar file" * 40)
    (tmp_path / "empty.tar").write_bytes(b"")
    shards += [str(tmp_path / "garbage.tar"), str(tmp_path / "empty.tar"), f"pipe:cat {tmp_path}/absent.tar"]
    for resampled in (False, True):
        (tmp_path / "vanishing.tar").write_bytes(b"")
        loader = load(shards, num_samples_per_epoch=4, resampled=resampled)
        os.remove(tmp_path / "vanishing.tar")  # listed, then gone before reading
        with pytest.raises(RuntimeError, match="no usable sample.*decode_error"):
            keys_of(loader)
        counts = get_skip_counts(loader)
        if not resampled:  # one exact pass: each shard counted once
            assert {k: v for k, v in counts.items() if v} == {
                "decode_error": 4, "tar_error": 4, "missing_shard": 1}
        else:
            assert counts["decode_error"] >= 4 and counts["missing_shard"] >= 1


def test_nothing_to_count_raises(tmp_path):
    (tmp_path / "garbage.tar").write_bytes(b"x" * 2000)
    with pytest.raises(RuntimeError, match="no usable sample"):
        load(str(tmp_path / "garbage.tar"))


def test_unmatched_specs_raise_file_not_found(tmp_path):
    good_shards(tmp_path, 1, 1)
    for spec in [f"{tmp_path}/nothing-*.tar", f"{tmp_path}/x{{0..3}}.tar", f"{tmp_path}/absent.tar"]:
        with pytest.raises(FileNotFoundError, match="matches no file") as info:
            load(spec)
        assert spec in str(info.value)
    with pytest.raises(FileNotFoundError, match="absent"):
        load([f"{tmp_path}/s0.tar", f"{tmp_path}/absent.tar"], num_samples_per_epoch=1)
    with pytest.raises(FileNotFoundError, match="lists no shard"):
        load([], num_samples_per_epoch=1)
    # A brace pattern with some files present keeps those.
    assert keys_of(load(f"{tmp_path}/s{{0..3}}.tar")) == ["s0k0"]



def test_a_glob_that_matches_nothing_is_named_and_a_shard_listed_twice_is_read_once(tmp_path, caplog):
    from diffengine.datasets.shards import expand_shards

    (tmp_path / "laion").mkdir()
    (tmp_path / "coyo").mkdir()  # empty, or mistyped: half the data would be missing without a word
    shards = good_shards(tmp_path / "laion", 2, 1)
    with caplog.at_level("WARNING"):
        assert expand_shards(f"{tmp_path}/{{laion,coyo}}/*.tar") == shards
    assert f"match nothing, e.g. {tmp_path}/coyo/*.tar" in caplog.text
    caplog.clear()
    (tmp_path / "linked").symlink_to(tmp_path / "laion")
    with caplog.at_level("WARNING"):
        assert expand_shards([f"{tmp_path}/laion/s{{0..1}}.tar", f"{tmp_path}/laion/*.tar",
                              f"{tmp_path}/linked/s1.tar"]) == shards
    assert "lists 3 shard(s) more than once" in caplog.text


def test_too_few_shards_for_exact_mode(tmp_path):
    shards = good_shards(tmp_path, 3, 2)
    with pytest.raises(ValueError, match="world_size x num_workers = 4"):
        load(shards, num_workers=2, rank=0, world_size=2)
    with pytest.raises(ValueError, match="= 4"):
        load(shards, num_workers=4)
    assert len(load(shards, num_workers=2, rank=0, world_size=2, resampled=True, num_samples_per_epoch=4)) == 2


def test_weighted_sources(tmp_path):
    a = good_shards(tmp_path, 2, 5, prefix="a")
    b = good_shards(tmp_path, 2, 5, prefix="b")
    loader = load([a, f"{tmp_path}/b*.tar"], weights=[3, 1], resampled=True, batch_size=10,
                  num_samples_per_epoch=400, seed=3)
    keys = keys_of(loader)
    assert len(keys) == 400 and keys == keys_of(loader)
    share = sum(k.startswith("a") for k in keys) / len(keys)
    assert 0.65 < share < 0.85
    with pytest.raises(ValueError, match="weights"):
        load(a[0], weights=[1.0])
    with pytest.raises(ValueError, match="weights"):
        load([a, b], weights=[1.0])
    for bad in ([1.0, float("nan")], [1.0, float("inf")], [1.0, -1.0], [0.0, 0.0]):
        with pytest.raises(ValueError, match="with finite non-negative weights that do not all vanish"):
            load([a, b], weights=bad)
    assert {key[:2] for key in keys} == {"a0", "a1", "b0", "b1"}  # every shard of both sources drawn


def test_worker_counts_reach_the_main_process(tmp_path):
    # Bad samples lead each shard, so each worker meets them before its quota of one batch.
    shards = [write_tar(tmp_path / f"w{i}.tar", [sample(f"w{i}bad", image=b"junk"), sample(f"w{i}nocap", None)]
                        + [sample(f"w{i}k{j}") for j in range(4)]) for i in range(2)]
    everything = {f"w{i}k{j}" for i in range(2) for j in range(4)}
    kwargs = {"batch_size": 4, "num_samples_per_epoch": 8, "num_workers": 2, "seed": 5}
    loader = load(shards, persistent_workers=True, **kwargs)
    assert len(loader) == 2
    epoch0 = keys_of(loader)
    assert len(epoch0) == 8 and set(epoch0) == everything
    assert {k: v for k, v in get_skip_counts(loader).items() if v} == {"decode_error": 2, "missing_caption": 2}
    loader.sampler.set_epoch(1)  # reaches the already running persistent workers
    epoch1 = keys_of(loader)
    assert set(epoch1) == everything and get_skip_counts(loader)["decode_error"] == 4
    fresh = load(shards, **kwargs)
    fresh.dataset.set_epoch(1)
    assert keys_of(fresh) == epoch1


def test_num_samples_required_for_remote_shards(tmp_path):
    good_shards(tmp_path, 1, 2)
    with pytest.raises(ValueError, match="num_samples_per_epoch is required"):
        load(f"pipe:cat {tmp_path}/s0.tar")
