"""Honest data accounting: what corrupt shards lose, how it is counted, and where it is logged."""
import gzip
import tarfile
import uuid
from pathlib import Path

import pytest
from mmengine.logging import MMLogger

from diffengine.datasets import build_wds_dataloader, get_skip_counts
from diffengine.datasets.skip_accounting import WorkerMessages
from diffengine.engine.hooks.data_skip_log_hook import DataSkipLogHook
from tests.helpers import image_bytes, keys_of, load, sample, write_tar


def flip_header_bit(path: str, member: str, offset: int = 136) -> str:
    """Flip one bit of member `member`'s ustar header (in its mtime field by default)."""
    with tarfile.open(path) as tar:
        header = tar.getmember(member).offset_data - 512
    with open(path, "r+b") as stream:
        stream.seek(header + offset)
        byte = stream.read(1)[0]
        stream.seek(header + offset)
        stream.write(bytes([byte ^ 0x01]))
    return path


def shard(folder: Path, name: str, count: int, junk: tuple[int, ...] = ()) -> str:
    """A shard of samples {name}k0.. (those at `junk` with an undecodable image)."""
    return write_tar(folder / f"{name}.tar", [sample(f"{name}k{j}", image=b"junk" if j in junk else b"")
                                              for j in range(count)])


def current_log(tmp_path: Path) -> Path:
    """Make a new MMLogger, writing to a file, the one that logger="current" finds."""
    log = tmp_path / f"{uuid.uuid4().hex}.log"
    MMLogger.get_instance(f"accounting_{log.stem}", log_file=str(log))
    return log


def test_bit_flipped_shards_keep_their_other_samples(tmp_path):
    # Measured before: a bit flip in the second sample's header of each of two shards lost the
    # rest of both shards, and the epoch re-read the two samples before it over and over.
    shards = [flip_header_bit(shard(tmp_path, f"s{i}", 16), f"s{i}k1.jpg") for i in range(2)]
    loader = load(shards, batch_size=2, num_samples_per_epoch=30)
    keys = keys_of(loader)
    assert sorted(keys) == sorted(f"s{i}k{j}" for i in range(2) for j in range(16) if j != 1)
    counts = get_skip_counts(loader)
    assert counts["tar_error"] == 2 and counts["missing_image"] == 0  # the samples lost


def test_a_cut_shard_counts_an_estimate_of_its_unread_samples(tmp_path):
    shards = [shard(tmp_path, f"s{i}", 8) for i in range(3)]
    with tarfile.open(shards[1]) as tar:
        cut = tar.getmember("s1k2.jpg").offset_data + 100
    with open(shards[1], "r+b") as stream:
        stream.truncate(cut)
    # the other shards hold 8 samples each: 6 of the cut one's are estimated lost (2 were read);
    # one sample more than the shards hold, so that the pass reads to the cut whatever the order
    loader = load(shards, num_samples_per_epoch=19)
    assert set(keys_of(loader)) == {f"s{i}k{j}" for i in range(3) for j in range(8) if i != 1 or j < 2}
    assert get_skip_counts(loader)["tar_error"] == 6


def test_a_cut_compressed_shard_counts_an_estimate_too(tmp_path):
    # webdataset's tarfile path cannot read past a corrupt spot; what it loses is estimated alike
    shards = []
    for i in range(3):
        plain = write_tar(tmp_path / f"s{i}.tar", [sample(f"s{i}k{j}", image=image_bytes(seed=10 * i + j))
                                                   for j in range(8)])  # images that do not compress
        with open(plain, "rb") as source, gzip.open(f"{plain}.gz", "wb") as target:
            target.write(source.read())
        shards.append(f"{plain}.gz")
    cut = Path(shards[1])
    whole = cut.read_bytes()
    # TarWriter's pax headers (float mtimes) shift the layout from run to run; a cut that lands in
    # a header block ends tarfile's stream quietly, so take the first cut that tarfile reports
    for fraction in (0.6, 0.55, 0.65, 0.5, 0.7, 0.45):
        cut.write_bytes(whole[:int(len(whole) * fraction)])
        members = []
        try:
            with tarfile.open(cut, "r|gz") as tar:
                for member in tar:
                    tar.extractfile(member).read()
                    members.append(member.name)
        except (EOFError, tarfile.ReadError):
            break
    else:
        pytest.fail("no cut of the shard made tarfile report an error")
    readable = {name[:-4] for name in members if name.endswith(".txt")}  # jpg, then txt
    assert 0 < len(readable) < 8
    loader = load(shards, num_samples_per_epoch=17 + len(readable))  # one more: the pass reads to the cut
    assert {key for key in keys_of(loader) if key.startswith("s1")} == readable
    counts = get_skip_counts(loader)
    # each sample of the cut shard that was not trained is counted once: as estimated lost, or
    # (one cut after its image, if any) as reaching the loader without a caption
    assert counts["tar_error"] + counts["missing_caption"] == 8 - len(readable)
    assert counts["missing_caption"] <= 1


def test_failing_shards_reach_the_main_process_from_workers(tmp_path):
    shards = [shard(tmp_path, f"s{i}", 6) for i in range(2)]
    with tarfile.open(shards[0]) as tar:
        offset = tar.getmember("s0k2.jpg").offset_data - 512  # the same in both shards
    for i, path in enumerate(shards):
        flip_header_bit(path, f"s{i}k2.jpg")
    loader = load(shards, num_samples_per_epoch=10, num_workers=2)  # 5 samples for each worker
    assert len(keys_of(loader)) == 10
    messages, missed = loader.dataset.take_messages()
    assert missed == 0 and sorted(messages) == [
        f"shard {path}: tar_error, 1 sample(s) lost: corrupt member header at byte {offset}, skipped "
        "to the next valid header" for path in shards]
    assert loader.dataset.take_messages() == ([], 0)  # each is taken once


def test_messages_overwritten_before_they_are_taken_are_counted():
    messages = WorkerMessages(slots=4, size=16)
    for index in range(6):
        messages.put(f"message {index} and a long tail")
    assert messages.take() == ([f"message {index} and a " for index in range(2, 6)], 2)  # cut to 16 bytes
    messages.put("next")
    assert messages.take() == (["next"], 0)


def test_epoch_larger_than_the_shards_warns_with_the_real_count(tmp_path):
    shards = [shard(tmp_path, f"s{i}", 30) for i in range(2)]
    log = current_log(tmp_path)
    load(shards, batch_size=4, num_samples_per_epoch=512)
    assert "num_samples_per_epoch=512 but the shards hold 60 samples with an image: each is seen ~8.53 " \
           "times per epoch" in log.read_text()
    # after a bit flip the shards hold 59: an epoch of 60 warns, one of 59 does not
    flip_header_bit(shards[0], "s0k7.txt")
    log = current_log(tmp_path)
    load(shards, batch_size=4, num_samples_per_epoch=59)
    load(shards, batch_size=4, num_samples_per_epoch=60)
    text = log.read_text()
    assert text.count("num_samples_per_epoch=") == 1 and "=60 but the shards hold 59 samples" in text
    # with weights, each source is held against its share of the epoch
    log = current_log(tmp_path)
    small = shard(tmp_path, "small", 5)
    load([shards, [small]], weights=[3, 1], resampled=True, batch_size=4, num_samples_per_epoch=60)
    assert f"~15 from {[small]!r} (weight 25%), whose shards hold 5 samples with an image: each is seen ~3 " \
           "times per epoch" in log.read_text()


def test_hook_writes_failing_shards_and_refilled_epochs_to_the_work_dir_log(tmp_path):
    from tests.helpers import train_toy

    # Each shard: a bit-flipped header (the header count already leaves that sample out) and an
    # undecodable image it cannot see, so each worker's pass gives 4 usable samples of its 5
    # (2 skipped: the one dropped, the one undecodable).
    shards = [flip_header_bit(shard(tmp_path, f"s{i}", 6, junk=(4,)), f"s{i}k1.jpg") for i in range(2)]
    loader = dict(type=build_wds_dataloader, shards=shards, batch_size=1, resolution=8, num_samples_per_epoch=10,
                  num_workers=2, shuffle_buffer=0)
    runner = train_toy(tmp_path / "work", loader, max_iters=20, custom_hooks=[DataSkipLogHook(interval=5)])
    log = Path(runner.log_dir, f"{runner.timestamp}.log").read_text()
    for path in shards:  # named once, though read again in the second epoch
        assert log.count(f"data: shard {path}: tar_error, 1 sample(s) lost: corrupt member header") == 1
    for epoch in (0, 1):
        for worker in (0, 1):
            assert (f"data: epoch {epoch}, rank 0, worker {worker}: a pass over its shards gave 4 distinct "
                    "usable samples (2 skipped) of the 5 the epoch takes from it") in log
    assert "num_samples_per_epoch" not in log  # the headers hold 10 samples: no warning at the start
