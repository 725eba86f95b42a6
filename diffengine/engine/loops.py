"""Iteration-based training loop that resumes a streaming (webdataset) loader without replaying it."""
import copy
import logging
import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from mmengine.dist import all_gather_object, get_rank, get_world_size
from mmengine.hooks import CheckpointHook, Hook
from mmengine.logging import print_log
from mmengine.runner import IterBasedTrainLoop
from torch.utils.data import DataLoader, IterableDataset

from diffengine.contracts import STREAM_POSITION_KEY, EpochStream, ResumableStream
from diffengine.registry import LOOPS

from .stop_signal import StopSignal


def is_streaming_loader(dataloader: DataLoader) -> bool:
    """True for a DataLoader over a sized IterableDataset whose ``set_epoch`` reseeds its stream."""
    dataset = getattr(dataloader, "dataset", None)
    # Epochs are counted in batches, so the loader needs a length.
    return isinstance(dataset, IterableDataset) and isinstance(dataset, EpochStream)


class _EndlessEpochIterator:
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

    def __iter__(self) -> "_EndlessEpochIterator":
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


def random_state() -> dict[str, Any]:
    """Every random-number state a training step draws from (Python, numpy, torch, CUDA), as plain data."""
    _, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    state = {"python": random.getstate(), "numpy": [keys.tolist(), position, has_gauss, cached_gaussian],
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_random_state(state: dict[str, Any]) -> None:
    """Restore what ``random_state`` returned."""
    version, internal, gaussian = state["python"]
    random.setstate((version, tuple(internal), gaussian))
    keys, position, has_gauss, cached_gaussian = state["numpy"]
    np.random.set_state(("MT19937", np.asarray(keys, dtype=np.uint32), position, has_gauss, cached_gaussian))
    # MMEngine's resume maps checkpoints to the GPU; RNG states must be CPU byte tensors
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"].cpu())


def checkpoint_hooks(runner) -> list[CheckpointHook]:
    """The runner's checkpoint hooks (``default_hooks.checkpoint``)."""
    return [hook for hook in runner.hooks if isinstance(hook, CheckpointHook)]


def saves_now(runner, hook: CheckpointHook) -> bool:
    """True when ``hook`` saves a checkpoint after this iteration (its ``after_train_iter`` condition)."""
    return not hook.by_epoch and (hook.every_n_train_iters(runner, hook.interval, hook.save_begin)
                                  or (hook.save_last and hook.is_last_train_iter(runner)))


class _ResumeStateHook(Hook):
    """Puts every rank's stream position and random state into the checkpoints; hands them back on resume.

    Checkpoints are written by rank 0 alone, so the states are gathered from all ranks one
    step earlier, in ``after_train_iter`` of the iterations at which a ``CheckpointHook`` saves
    or the run stops on a signal (a collective at checkpoint time only, not at every step).
    """

    priority = "LOW"  # after the loop recorded the batch, before CheckpointHook (VERY_LOW) saves

    def __init__(self, loop: "StreamingIterBasedTrainLoop") -> None:
        self.loop = loop
        self._gathered: list[dict] | None = None

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        """Gather the states on all ranks when a checkpoint follows this iteration."""
        if self.loop.stopped_by or any(saves_now(runner, hook) for hook in checkpoint_hooks(runner)):
            # a snapshot: with one process all_gather_object returns the live object itself
            self._gathered = all_gather_object(copy.deepcopy(
                {"iteration": self.loop.iter + 1, "stream": self.loop.stream_state,
                 "random": self.loop.step_random_state}))

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        """Store the gathered states (one per rank) when they are this checkpoint's."""
        meta = checkpoint.setdefault("meta", {})
        if not self._gathered or any(state["iteration"] != meta.get("iter") for state in self._gathered):
            return
        streams = [state["stream"] for state in self._gathered]
        if all(isinstance(stream, dict) and stream["iteration"] == meta.get("iter") for stream in streams):
            meta["data_stream"] = streams
        if all(state["random"] is not None for state in self._gathered):
            meta["random_state"] = [state["random"] for state in self._gathered]

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        """Give this rank's stream position and random state to the loop (None when absent)."""
        meta = checkpoint.get("meta", {})
        streams, randoms = meta.get("data_stream"), meta.get("random_state")
        rank, world_size = get_rank(), get_world_size()
        self.loop.resume_state = streams[rank] if streams and len(streams) == world_size else None
        if not runner._resume:
            return  # load_from starts a new run: its draws come from this run's seed
        self.loop.step_random_state = randoms[rank] if randoms and len(randoms) == world_size else None
        if randoms and len(randoms) != world_size:
            print_log(f"the checkpoint holds the random states of {len(randoms)} rank(s), this run has "
                      f"{world_size}: noise and timesteps are drawn afresh", logger="current",
                      level=logging.WARNING)
        elif not randoms and meta.get("iter"):
            print_log("the checkpoint holds no random states (written before diffengine saved them): "
                      "noise and timesteps are drawn afresh", logger="current", level=logging.WARNING)


@LOOPS.register_module()
class StreamingIterBasedTrainLoop(IterBasedTrainLoop):
    """``IterBasedTrainLoop`` that resumes a streaming loader at the saved position cheaply.

    For a DataLoader over an ``IterableDataset`` with ``set_epoch`` (``build_wds_dataloader``),
    iteration ``i`` trains on batch ``i % len(loader)`` of data epoch ``i // len(loader)``; each
    epoch is a fresh ``iter(loader)`` after ``dataset.set_epoch(epoch)``, as in MMEngine's loop.
    Resuming at iteration ``i`` sets epoch ``i // len(loader)``; earlier epochs are never read
    (except that MMEngine's constructor starts an epoch-0 iterator, dropped at once: with workers,
    up to ``prefetch_factor`` batches per worker may be decoded before they stop).
    Mid-epoch, checkpoints carry each rank's stream position (``data_samples[STREAM_POSITION_KEY]``
    of the last batch of every worker slot), and ``dataset.resume_from`` fast-forwards each slot
    past the ``i % len(loader)`` trained batches, reading their tar records without decoding a
    single image. A checkpoint without positions (or with a different ``num_workers`` or epoch
    length) falls back to iterating those batches, which decodes them. MMEngine instead reads
    and decodes all ``i`` batches since iteration 0.

    Guarantee: given the same loader (shards, ``seed``, ``batch_size``, ``num_samples_per_epoch``,
    world size and ``num_workers``), the batches trained after resuming at any iteration, at an
    epoch boundary or mid-epoch, are exactly those an uninterrupted run trains at those
    iterations (so in exact mode no sample comes twice within an epoch). The stream's ``seed``
    comes from the loader config, not from the runner's random seed, so a resumed run reads the
    same stream. Other loaders (map-style datasets with samplers) keep MMEngine's behaviour.

    Random draws (noise, timesteps, caption dropout, LoRA dropout): each training step starts
    from the random state the previous step ended with, whatever hooks drew in between (sample
    images, evaluations), and checkpoints carry that state for every rank. So a resumed run draws
    exactly what the uninterrupted run draws, and ends with the same weights.

    SIGTERM (a scheduler's stop, torchrun passing one on): the step in progress ends, the ranks
    agree to stop after it, a checkpoint (and its bridge) is saved through the config's
    ``CheckpointHook`` and the loop ends; ``stopped_by`` then holds the signal's number (also
    when the stop came at the last iteration, which ends the run as planned).
    """

    def __init__(self, runner, dataloader: DataLoader | dict, max_iters: int, **kwargs: Any) -> None:
        super().__init__(runner, dataloader, max_iters, **kwargs)
        self._streaming = is_streaming_loader(self.dataloader)
        self.stream_state: dict[str, Any] | None = None  # where the trained batches left the stream
        self.resume_state: dict[str, Any] | None = None  # this rank's stream_state from a checkpoint
        self.step_random_state: dict[str, Any] | None = None  # where the last step left the RNGs
        self.started = False  # set once the model, optimizer and any resumed state are in place
        self.stop_signal = StopSignal()
        self.stopped_by = 0  # the signal the ranks agreed to stop on (0: none)
        self.stop_checkpoint: str | None = None  # the checkpoint saved when it did
        if self._streaming:
            # Replaces MMEngine's iterator, which started reading epoch 0 before a resume could
            # say which epoch comes first.
            self.dataloader_iterator = _EndlessEpochIterator(self.dataloader)
        runner.register_hook(_ResumeStateHook(self))

    @property
    def data_epoch(self) -> int:
        """Epoch of the streaming loader the next batch comes from (runner.epoch stays 0)."""
        return self._iter // len(self.dataloader)

    def run(self) -> Any:
        """Launch training; a streaming loader starts at the epoch and batch of ``self.iter``."""
        self.started = True
        self.stop_signal.install()
        try:
            return super().run() if not self._streaming else self._run_streaming()
        finally:
            self.stop_signal.uninstall()

    def _run_streaming(self) -> Any:
        self.runner.call_hook("before_train")
        # Iteration-based training is one big epoch for the hooks, as in IterBasedTrainLoop.
        self.runner.call_hook("before_train_epoch")
        offset = self.dataloader_iterator.seek(self._iter)
        if 0 < self._iter < self._max_iters:
            self._resume_stream(offset)
        while self._iter < self._max_iters and not self.stop_training:
            self.runner.model.train()
            data_batch = next(self.dataloader_iterator)
            self._record_position(data_batch, self._iter)
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

    def run_iter(self, data_batch: dict) -> None:
        """One training step, drawing random numbers where the previous step stopped."""
        self.runner.call_hook("before_train_iter", batch_idx=self._iter, data_batch=data_batch)
        if self.step_random_state is not None:
            set_random_state(self.step_random_state)
        outputs = self.runner.model.train_step(data_batch, optim_wrapper=self.runner.optim_wrapper)
        self.step_random_state = random_state()
        # at the last iteration too: its hooks then skip their final sample grids and scores
        self.stopped_by = self.stop_signal.agreed()
        self.stop_training = self.stop_training or bool(self.stopped_by)
        self.runner.call_hook("after_train_iter", batch_idx=self._iter, data_batch=data_batch,
                              outputs=outputs)
        if self.stopped_by:
            self._save_at_stop()
        self._iter += 1

    def _save_at_stop(self) -> None:
        """Save this iteration's checkpoint, unless the config's CheckpointHook has just done so."""
        hooks = checkpoint_hooks(self.runner)
        if not hooks:
            return
        if not any(saves_now(self.runner, hook) for hook in hooks):
            # MMEngine's own save: the hook's folder, file names, keep-last-N and last_checkpoint
            hooks[0]._save_checkpoint(self.runner)
        self.stop_checkpoint = self.runner.message_hub.get_info("last_ckpt")

    def _slots(self) -> int:
        """Worker slots of the loader, which deals batches to them round-robin."""
        return max(1, self.dataloader.num_workers)

    def _record_position(self, data_batch: dict, iteration: int) -> None:
        """Note where the batch trained at `iteration` leaves its worker slot's stream."""
        epoch, index = self.dataloader_iterator.epoch, iteration % len(self.dataloader)
        state = self.stream_state
        if state is None or state["epoch"] != epoch:
            state = self.stream_state = {"epoch": epoch, "positions": [0] * self._slots(),
                                         **self._stream_identity()}
        samples = data_batch.get("data_samples") if isinstance(data_batch, dict) else None
        position = samples.get(STREAM_POSITION_KEY) if isinstance(samples, dict) else None
        if position is None:
            state["positions"] = None  # unknown: a resume in this epoch has to iterate
        elif state["positions"] is not None:
            state["positions"][index % self._slots()] = int(position)  # batches are dealt round-robin
        state["iteration"] = iteration + 1  # the iteration a checkpoint after this batch resumes at

    def _stream_identity(self) -> dict[str, Any]:
        """What must match between the saved run and this one for its positions to apply."""
        dataset = self.dataloader.dataset
        return {"batches_per_epoch": len(self.dataloader), "batch_size": self.dataloader.batch_size,
                "seed": getattr(dataset, "seed", None), "stream": getattr(dataset, "stream_fingerprint", None)}

    def _resume_stream(self, offset: int) -> None:
        """Continue mid-epoch without decoding the trained batches when the checkpoint allows it."""
        epoch, state = self.data_epoch, self.resume_state
        if offset == 0:
            print_log(f"Resuming the data stream at the start of epoch {epoch}", logger="current",
                      level=logging.INFO)
            return
        dataset = self.dataloader.dataset
        if (state is not None and isinstance(dataset, ResumableStream)
                and state.get("iteration") == self._iter and state.get("epoch") == epoch
                and all(state.get(key) == value for key, value in self._stream_identity().items())
                and len(state.get("positions") or ()) == self._slots()):
            dataset.resume_from(epoch, offset, state["positions"])
            self.stream_state = state
            print_log(f"Resuming the data stream at epoch {epoch}, batch {offset}: the trained "
                      f"batches are fast-forwarded without decoding", logger="current", level=logging.INFO)
            return
        print_log(f"Resuming the data stream at epoch {epoch} by iterating (reading and decoding) its "
                  f"first {offset} batch(es): the checkpoint holds no matching stream position",
                  logger="current", level=logging.WARNING)
        for iteration in range(self._iter - offset, self._iter):
            self._record_position(next(self.dataloader_iterator), iteration)

