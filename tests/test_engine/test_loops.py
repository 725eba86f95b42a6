import io
import signal
import subprocess
from pathlib import Path

import pytest
import torch

from diffengine.datasets import build_wds_dataloader
from diffengine.datasets.wds_dataset import WebImageTextDataset
from diffengine.engine.loops import StreamingIterBasedTrainLoop
from diffengine.engine.runner import DiffEngineRunner
from tests.helpers import map_cfg, renamed_durably, train_toy


def wds_cfg(shards: str, **kwargs) -> dict:
    """Two batches of four per epoch: seven iterations cross three epoch ends."""
    return {"type": build_wds_dataloader, "shards": shards, "batch_size": 4, "resolution": 8,
            "num_samples_per_epoch": 8, "num_workers": 0, "shuffle_buffer": 16, **kwargs}


def epoch_stream(cfg: dict, epochs: int) -> list[list[str]]:
    """Batch keys of the loader's epochs 0..epochs-1, each from a fresh iter after set_epoch."""
    loader = build_wds_dataloader(**{k: v for k, v in cfg.items() if k != "type"}, seed=0)
    batches = []
    for epoch in range(epochs):
        loader.dataset.set_epoch(epoch)
        batches += [batch["data_samples"]["keys"] for batch in loader]
    return batches


@pytest.fixture
def reads(monkeypatch) -> dict[str, list]:
    """Epochs whose stream the dataset starts and keys of the samples it decodes (this process)."""
    log: dict[str, list] = {"epochs": [], "decoded": []}
    iterate, decode = WebImageTextDataset.__iter__, WebImageTextDataset._decode

    def counting_iter(self):
        log["epochs"].append(self.epoch)
        yield from iterate(self)

    def counting_decode(self, item, rng):
        log["decoded"].append(item["where"])
        return decode(self, item, rng)

    monkeypatch.setattr(WebImageTextDataset, "__iter__", counting_iter)
    monkeypatch.setattr(WebImageTextDataset, "_decode", counting_decode)
    return log


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, demo_shards):
    """Seven iterations with a checkpoint after each, and the stream they should have read."""
    work_dir = tmp_path_factory.mktemp("stream")
    runner = train_toy(work_dir, wds_cfg(demo_shards), max_iters=7)
    assert isinstance(runner.train_loop, StreamingIterBasedTrainLoop)
    return work_dir, runner.model.seen, epoch_stream(wds_cfg(demo_shards), epochs=4)


def test_fresh_run_reads_epoch_after_epoch(uninterrupted):
    _, seen, stream = uninterrupted
    assert seen == stream[:7]
    assert len({key for batch in stream for key in batch}) > 8  # epochs differ


@pytest.mark.parametrize("start", [4, 5], ids=["epoch_boundary", "mid_epoch"])
def test_resume_reads_only_the_current_epoch(uninterrupted, reads, tmp_path, demo_shards, start):
    work_dir, seen, _ = uninterrupted
    runner = train_toy(tmp_path, wds_cfg(demo_shards), max_iters=7,
                       resume_from=str(work_dir / f"iter_{start}.pth"))
    assert runner.iter == 7 and runner.train_loop.data_epoch == 3
    assert runner.model.seen == seen[start:7]
    # Epochs 0 and 1 are never read; the trained batch of epoch 2 (mid-epoch) is not decoded.
    assert reads["epochs"] == [2, 3]
    assert len(reads["decoded"]) == 4 * (7 - start)


def test_resume_without_stream_positions_iterates_the_trained_batches(uninterrupted, reads, tmp_path,
                                                                      demo_shards):
    work_dir, seen, _ = uninterrupted
    checkpoint = torch.load(work_dir / "iter_5.pth", weights_only=True)
    assert [state["positions"] for state in checkpoint["meta"]["data_stream"]] == [[4]]
    del checkpoint["meta"]["data_stream"]  # as written before positions existed
    torch.save(checkpoint, tmp_path / "old.pth")
    runner = train_toy(tmp_path / "work", wds_cfg(demo_shards), max_iters=7, resume_from=str(tmp_path / "old.pth"))
    assert runner.model.seen == seen[5:7]
    assert len(reads["decoded"]) == 4 * (7 - 4)  # the batch trained before iteration 5 decoded again


def test_resume_with_nothing_left_to_train_reads_nothing(uninterrupted, reads, tmp_path, demo_shards):
    work_dir, _, _ = uninterrupted
    runner = train_toy(tmp_path, wds_cfg(demo_shards), max_iters=5, resume_from=str(work_dir / "iter_5.pth"))
    assert runner.iter == 5 and runner.model.seen == []
    assert reads == {"epochs": [], "decoded": []}


def test_batches_without_position_make_a_resume_iterate(tmp_path, demo_shards, monkeypatch):
    from diffengine.datasets import wds_loader
    from diffengine.datasets.collate import collate_batch

    def without_position(samples, **options):
        batch = collate_batch(samples, **options)
        del batch["data_samples"]["stream_position"]
        return batch

    monkeypatch.setattr(wds_loader, "collate_batch", without_position)  # where the builder looks it up
    train_toy(tmp_path, wds_cfg(demo_shards), max_iters=3)
    checkpoint = torch.load(tmp_path / "iter_3.pth", weights_only=True)
    assert checkpoint["meta"]["data_stream"][0]["positions"] is None
    runner = train_toy(tmp_path / "resumed", wds_cfg(demo_shards), max_iters=4,
                       resume_from=str(tmp_path / "iter_3.pth"))
    log = Path(runner.log_dir, f"{runner.timestamp}.log").read_text()
    assert "no matching stream position" in log and "fast-forwarded" not in log


@pytest.mark.parametrize("persistent", [False, True], ids=["workers", "persistent_workers"])
def test_worker_processes_resume_on_the_same_stream(tmp_path, demo_shards, persistent):
    cfg = wds_cfg(demo_shards, num_workers=2, persistent_workers=persistent)
    stream = epoch_stream(cfg, epochs=3)
    runners = [train_toy(tmp_path, cfg, max_iters=3)]
    runners.append(train_toy(tmp_path, cfg, max_iters=5, resume_from=str(tmp_path / "iter_3.pth")))
    assert runners[0].model.seen == stream[:3]
    assert runners[1].model.seen == stream[3:5]
    log = Path(runners[1].log_dir, f"{runners[1].timestamp}.log").read_text()
    assert "fast-forwarded without decoding" in log  # not the fallback that iterates
    if persistent:
        # Left to the garbage collector, torch waits 5 s per persistent worker to join it.
        for runner in runners:
            runner.train_dataloader._iterator._shutdown_workers()


def test_map_style_loader_keeps_mmengine_resume(tmp_path):
    first = train_toy(tmp_path, map_cfg(), max_iters=3)
    resumed = train_toy(tmp_path, map_cfg(), max_iters=3, resume_from=str(tmp_path / "iter_1.pth"))
    assert resumed.model.seen == first.model.seen[1:3]
    assert resumed.train_dataloader.dataset.reads == 2 * 3  # the trained batch replayed, as MMEngine does


@pytest.mark.skipif(not hasattr(signal, "sigwaitinfo"), reason="the signal's sender is read on Linux only")
def test_a_loader_worker_outlives_another_process_sigterm_and_ends_on_its_parents(demo_shards):
    # torchrun and SLURM signal a rank's loader workers too: one must not die and fail the step
    loader = DiffEngineRunner.build_dataloader(wds_cfg(demo_shards, num_workers=1, num_samples_per_epoch=64))
    batches = iter(loader)
    next(batches)
    worker = batches._workers[0]
    sender = subprocess.Popen(["kill", "-TERM", str(worker.pid)])
    assert sender.wait() == 0
    worker.join(timeout=2)
    assert worker.is_alive()
    next(batches)  # it still serves batches
    worker.terminate()  # the training process's own SIGTERM (shutting its workers down) ends it
    worker.join(timeout=10)
    assert not worker.is_alive()


@pytest.mark.parametrize("change", ["rewritten shard", "shuffle buffer", "metadata filter"])
def test_a_resume_over_another_stream_does_not_fast_forward_its_positions(change, tmp_path, demo_shards):
    import shutil
    import tarfile

    # the saved positions count samples of the stream as it was: prep-wds --overwrite rewrote a
    # shard, or the options that choose and order samples changed
    shards = tmp_path / "shards"
    shutil.copytree(Path(demo_shards).parent, shards)
    pattern = f"{shards}/{{00000..00003}}.tar"
    train_toy(tmp_path / "work", wds_cfg(pattern), max_iters=3)
    options = {"shuffle buffer": {"shuffle_buffer": 8}, "metadata filter": {"max_punsafe": 0.5}}.get(change, {})
    if change == "rewritten shard":
        with tarfile.open(shards / "00003.tar") as tar:
            members = [(member, tar.extractfile(member).read()) for member in tar.getmembers()]
        with tarfile.open(shards / "00003.tar", "w") as tar:  # its first half of the samples
            for member, data in members[:len(members) // 2]:
                tar.addfile(member, io.BytesIO(data))
    runner = train_toy(tmp_path / "resumed", wds_cfg(pattern, **options), max_iters=4,
                       resume_from=str(tmp_path / "work" / "iter_3.pth"))
    log = Path(runner.log_dir, f"{runner.timestamp}.log").read_text()
    assert "no matching stream position" in log and "fast-forwarded" not in log


def test_a_checkpoint_reaches_the_disk_before_it_takes_its_name(tmp_path, disk_events):
    train_toy(tmp_path, map_cfg(), max_iters=2, checkpoint_hook="CrashSafeCheckpointHook")
    for iteration in (1, 2):
        assert renamed_durably(disk_events, tmp_path / f".iter_{iteration}.partial.pth",
                               tmp_path / f"iter_{iteration}.pth")
    assert renamed_durably(disk_events, tmp_path / ".last_checkpoint.partial", tmp_path / "last_checkpoint")
