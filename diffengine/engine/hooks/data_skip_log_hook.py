"""Log how much bad data the webdataset loader skipped, by kind."""
from mmengine.hooks import Hook

from diffengine.datasets.wds_loader import WebImageTextDataset, get_skip_counts
from diffengine.registry import HOOKS


@HOOKS.register_module()
class DataSkipLogHook(Hook):
    """Writes ``train/skipped_<kind>`` (cumulative, non-zero kinds) to the message hub.

    The counts are this process's loader's (all its DataLoader workers); LoggerHook prints rank
    0's. Loaders without skip counts (anything but ``build_wds_dataloader``) are left alone.
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
        for kind, count in get_skip_counts(loader).items():
            if count:
                runner.message_hub.update_scalar(f"train/skipped_{kind}", count)
