"""Log how much bad data the webdataset loader skipped, by kind, summed over all ranks, and where."""
import logging

import torch
from mmengine.dist import all_gather_object, all_reduce, get_world_size, is_main_process
from mmengine.hooks import Hook
from mmengine.logging import print_log

from diffengine.datasets import get_skip_counts
from diffengine.datasets.wds_dataset import WebImageTextDataset
from diffengine.registry import HOOKS

from ..stop_signal import stopping


def sum_over_ranks(counts: dict[str, int]) -> dict[str, int]:
    """Counts by kind summed over all ranks (every rank must call it; unchanged when not distributed)."""
    totals = torch.tensor(list(counts.values()), dtype=torch.int64)
    all_reduce(totals, op="sum")
    return dict(zip(counts, totals.tolist(), strict=True))


@HOOKS.register_module()
class DataSkipLogHook(Hook):
    """Writes ``train/skipped_<kind>`` (cumulative, non-zero kinds) to the message hub, and logs where.

    The counts cover every rank's loader with all its DataLoader workers (one all-reduce every
    ``interval`` iterations). Which shards failed, why and with how many samples, and which
    passes ran out before their share of an epoch, is known in the DataLoader workers, whose
    logging reaches only their own stderr: the loader puts these messages into shared memory
    (``WebImageTextDataset.take_messages``), and this hook takes them at the same interval,
    gathers them from all ranks (only when some rank has any: their number rides on the
    all-reduce) and prints each distinct one once to the main process's log, the work dir's log
    file. Loaders without skip counts (anything but ``build_wds_dataloader``) are left alone.
    """

    priority = "NORMAL"  # before LoggerHook (BELOW_NORMAL) reads the message hub

    def __init__(self, interval: int = 50) -> None:
        if interval < 1:
            raise ValueError(f"interval must be >= 1, got {interval}")
        self.interval = interval
        self._logged: set[str] = set()  # a shard failing again in later epochs is logged once

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        """Record the counts and log new messages every `interval` iterations, at the last one and
        at a stop on SIGTERM (its checkpoint holds the counts)."""
        if not (self.every_n_train_iters(runner, self.interval) or self.is_last_train_iter(runner)
                or stopping(runner)):
            return
        loader = runner.train_dataloader
        dataset = getattr(loader, "dataset", None)
        if not isinstance(dataset, WebImageTextDataset):
            return
        messages, missed = dataset.take_messages()
        summed = sum_over_ranks({**get_skip_counts(loader), "_messages": len(messages) + missed})
        if summed.pop("_messages"):
            self._log(all_gather_object((messages, missed)))
        for kind, count in summed.items():
            if count:
                runner.message_hub.update_scalar(f"train/skipped_{kind}", count)

    def _log(self, gathered: list[tuple[list[str], int]]) -> None:
        """Print each rank's new messages that were not printed before (on the main process only)."""
        if not is_main_process():
            return
        for rank, (messages, missed) in enumerate(gathered):
            where = f"data (rank {rank})" if get_world_size() > 1 else "data"
            for message in messages:
                if message not in self._logged:
                    self._logged.add(message)
                    print_log(f"{where}: {message}", logger="current", level=logging.WARNING)
            if missed:
                print_log(f"{where}: {missed} more message(s) were overwritten before they could be "
                          "logged (a lower DataSkipLogHook interval takes them sooner)", logger="current",
                          level=logging.WARNING)
