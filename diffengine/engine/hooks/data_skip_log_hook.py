"""Log how much bad data the webdataset loader skipped, by kind, summed over all ranks."""
import torch
from mmengine.dist import all_reduce
from mmengine.hooks import Hook

from diffengine.datasets.wds_loader import WebImageTextDataset, get_skip_counts
from diffengine.registry import HOOKS


def sum_over_ranks(counts: dict[str, int]) -> dict[str, int]:
    """Counts by kind summed over all ranks (every rank must call it; unchanged when not distributed)."""
    totals = torch.tensor(list(counts.values()), dtype=torch.int64)
    all_reduce(totals, op="sum")
    return dict(zip(counts, totals.tolist()))


@HOOKS.register_module()
class DataSkipLogHook(Hook):
    """Writes ``train/skipped_<kind>`` (cumulative, non-zero kinds) to the message hub.

    The counts cover every rank's loader with all its DataLoader workers (one all-reduce every
    ``interval`` iterations). Loaders without skip counts (anything but ``build_wds_dataloader``)
    are left alone.
    """

    priority = "NORMAL"  # before LoggerHook (BELOW_NORMAL) reads the message hub

    def __init__(self, interval: int = 50) -> None:
        if interval < 1:
            raise ValueError(f"interval must be >= 1, got {interval}")
        self.interval = interval

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        """Record the counts every `interval` iterations and at the last one."""
        if not (self.every_n_train_iters(runner, self.interval) or self.is_last_train_iter(runner)):
            return
        loader = runner.train_dataloader
        if not isinstance(getattr(loader, "dataset", None), WebImageTextDataset):
            return
        for kind, count in sum_over_ranks(get_skip_counts(loader)).items():
            if count:
                runner.message_hub.update_scalar(f"train/skipped_{kind}", count)
