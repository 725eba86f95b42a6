from pathlib import Path

import pytest

from diffengine.datasets import build_wds_dataloader, get_skip_counts
from diffengine.engine.hooks.data_skip_log_hook import DataSkipLogHook
from tests.helpers import free_port, map_cfg, sample, train_toy, write_tar


def test_skip_counts_reach_message_hub_and_log(tmp_path):
    # Each pass over the shard meets one undecodable image and one sample without a caption.
    shard = write_tar(tmp_path / "bad.tar", [sample("junk", image=b"not an image"), sample("nocap", None)]
                      + [sample(f"good{i}") for i in range(4)])
    loader = dict(type=build_wds_dataloader, shards=shard, batch_size=2, resolution=8,
                  num_samples_per_epoch=4, num_workers=0, shuffle_buffer=0)
    runner = train_toy(tmp_path / "work", loader, max_iters=3,
                       custom_hooks=[dict(type="DataSkipLogHook", interval=2)])
    # Written after iteration 2 (epoch 0 read) and the last one, 3 (epoch 1 begun).
    scalars = runner.message_hub.log_scalars
    assert list(scalars["train/skipped_decode_error"].data[0]) == [1, 2]
    assert list(scalars["train/skipped_missing_caption"].data[0]) == [1, 2]
    assert {key for key in scalars if key.startswith("train/skipped_")} == {  # zero kinds left out
        "train/skipped_decode_error", "train/skipped_missing_caption"}
    assert get_skip_counts(runner.train_dataloader)["decode_error"] == 2
    log = Path(runner.log_dir, f"{runner.timestamp}.log").read_text()
    last = [line for line in log.splitlines() if "Iter(train) [3/3]" in line][0]
    assert "skipped_decode_error: 2" in last and "skipped_missing_caption: 2" in last


def test_loaders_without_skip_counts_are_ignored(tmp_path):
    runner = train_toy(tmp_path, map_cfg(), max_iters=2, custom_hooks=[DataSkipLogHook(interval=1)])
    assert not [key for key in runner.message_hub.log_scalars if key.startswith("train/skipped_")]


def test_interval_must_be_positive():
    with pytest.raises(ValueError, match="interval"):
        DataSkipLogHook(interval=0)


def _sum_on_rank(rank: int, port: int, results) -> None:
    import torch.distributed as dist

    from diffengine.engine.hooks.data_skip_log_hook import sum_over_ranks

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        results.put((rank, sum_over_ranks({"decode_error": rank + 1, "tar_error": 0, "missing_image": 5 * rank})))
    finally:
        dist.destroy_process_group()


def test_counts_are_summed_over_ranks():
    import multiprocessing

    port = free_port()
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    workers = [context.Process(target=_sum_on_rank, args=(rank, port, results)) for rank in range(2)]
    for worker in workers:
        worker.start()
    summed = dict(results.get(timeout=120) for _ in workers)
    for worker in workers:
        worker.join(timeout=60)
    assert summed[0] == summed[1] == {"decode_error": 3, "tar_error": 0, "missing_image": 5}
