"""Iteration-based training loop that resumes a streaming (webdataset) loader without replaying it."""
import logging
from collections.abc import Iterator
from typing import Any

from mmengine.logging import print_log
from mmengine.runner import IterBasedTrainLoop
from torch.utils.data import DataLoader, IterableDataset

from diffengine.registry import LOOPS


def is_streaming_loader(dataloader: DataLoader) -> bool:
    """True for a DataLoader over a sized IterableDataset whose ``set_epoch`` reseeds its stream."""
    dataset = getattr(dataloader, "dataset", None)
    # Epochs are counted in batches, so the loader needs a length.
    return (isinstance(dataset, IterableDataset) and hasattr(dataset, "__len__")
            and callable(getattr(dataset, "set_epoch", None)))


class _EpochStream:
    """Endless batches of a streaming loader, epoch after epoch; ``iter(loader)`` runs on demand.

    Unlike MMEngine's _InfiniteDataloaderIterator it does not sleep 2 s at each epoch end (a
    deadlock workaround its authors could not reproduce, open-mmlab/mmcv#306 and #1912).
    """

    def __init__(self, dataloader: DataLoader) -> None:
        self._dataloader = dataloader
        self.epoch = 0
        self._iterator: Iterator | None = None

    def seek(self, iteration: int) -> int:
        """Start over at the epoch holding `iteration`; returns its position in that epoch."""
        self.epoch, offset = divmod(iteration, len(self._dataloader))
        self._iterator = None
        return offset

    def close(self) -> None:
        """Drop the current epoch's iterator: its non-persistent workers stop now, not at gc."""
        self._iterator = None

    def __iter__(self) -> "_EpochStream":
        return self

    def __next__(self) -> Any:
        if self._iterator is None:
            self._restart()
        try:
            return next(self._iterator)
        except StopIteration:
            self.epoch += 1
            self._restart()
            return next(self._iterator)

    def _restart(self) -> None:
        # Before iter(): DataLoader workers read the epoch when they start the dataset's __iter__.
        self._dataloader.dataset.set_epoch(self.epoch)
        self._iterator = iter(self._dataloader)


@LOOPS.register_module()
class StreamingIterBasedTrainLoop(IterBasedTrainLoop):
    """``IterBasedTrainLoop`` that resumes a streaming loader at the saved position cheaply.

    For a DataLoader over an ``IterableDataset`` with ``set_epoch`` (``build_wds_dataloader``),
    iteration ``i`` trains on batch ``i % len(loader)`` of data epoch ``i // len(loader)``; each
    epoch is a fresh ``iter(loader)`` after ``dataset.set_epoch(epoch)``, as in MMEngine's loop.
    Resuming at iteration ``i`` sets epoch ``i // len(loader)`` and drops the first
    ``i % len(loader)`` batches of it by iterating them (they are read and decoded: the dataset
    offers no cheaper skip, since decode failures and augmentation draws decide which samples form
    those batches). MMEngine instead reads and decodes all ``i`` batches since iteration 0.

    Guarantee: given the same loader (shards, ``seed``, ``batch_size``, ``num_samples_per_epoch``,
    world size and ``num_workers``), the batches trained after resuming at any iteration, at an
    epoch boundary or mid-epoch, are exactly those an uninterrupted run trains at those
    iterations. The stream's ``seed`` comes from the loader config, not from the runner's random
    seed, so a resumed run reads the same stream.
    Other loaders (map-style datasets with samplers) keep MMEngine's behaviour unchanged.
    """

    def __init__(self, runner, dataloader: DataLoader | dict, max_iters: int, **kwargs: Any) -> None:
        super().__init__(runner, dataloader, max_iters, **kwargs)
        self._streaming = is_streaming_loader(self.dataloader)
        if self._streaming:
            # Replaces MMEngine's iterator, which started reading epoch 0 before a resume could
            # say which epoch comes first.
            self.dataloader_iterator = _EpochStream(self.dataloader)

    @property
    def data_epoch(self) -> int:
        """Epoch of the streaming loader the next batch comes from (runner.epoch stays 0)."""
        return self._iter // len(self.dataloader)

    def run(self) -> Any:
        """Launch training; a streaming loader starts at the epoch and batch of ``self.iter``."""
        if not self._streaming:
            return super().run()
        self.runner.call_hook("before_train")
        # Iteration-based training is one big epoch for the hooks, as in IterBasedTrainLoop.
        self.runner.call_hook("before_train_epoch")
        offset = self.dataloader_iterator.seek(self._iter)
        if 0 < self._iter < self._max_iters:
            print_log(f"Resuming the data stream at epoch {self.data_epoch}, skipping its first "
                      f"{offset} batch(es)", logger="current", level=logging.INFO)
            for _ in range(offset):
                next(self.dataloader_iterator)
        while self._iter < self._max_iters and not self.stop_training:
            self.runner.model.train()
            data_batch = next(self.dataloader_iterator)
            self.run_iter(data_batch)
            self._decide_current_val_interval()
            if (self.runner.val_loop is not None and self._iter >= self.val_begin
                    and (self._iter % self.val_interval == 0 or self._iter == self._max_iters)):
                self.runner.val_loop.run()
        # Prefetching workers would otherwise live until the runner's reference cycle is
        # collected, and torch then waits seconds per worker to join them.
        self.dataloader_iterator.close()
        self.runner.call_hook("after_train_epoch")
        self.runner.call_hook("after_train")
        return self.runner.model
