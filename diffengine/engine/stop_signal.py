"""A clean stop on SIGTERM: the step in progress ends, a checkpoint and bridge are saved, the run exits.

Schedulers send SIGTERM and wait a grace period before SIGKILL: SLURM at the time limit or on
preemption, Kubernetes when it evicts a pod, ``kill`` by default; torchrun forwards it to its
workers and waits 30 s. Every rank must stop after the same iteration (a checkpoint gathers all
ranks' states), so the ranks agree after each step with a one-number all-reduce on the CPU:
a gloo group, so no device synchronisation enters the step.
"""
import os
import signal
import threading
from collections.abc import Callable

import torch
import torch.distributed as dist
from mmengine.dist import get_world_size

STOP_SIGNALS = (signal.SIGTERM,)


class StopSignal:
    """Records a stop signal between ``install`` and ``uninstall``; ``agreed`` shares it among ranks."""

    def __init__(self) -> None:
        self.received = 0  # the signal's number, 0 while none came
        self._previous: dict[int, object] = {}
        self._group = None

    def install(self) -> None:
        """Catch the stop signals (in the main thread: Python delivers signals there alone)."""
        if get_world_size() > 1 and dist.get_backend() != "gloo":
            self._group = dist.new_group(backend="gloo")  # collective: every rank calls install
        if threading.current_thread() is threading.main_thread():
            for number in STOP_SIGNALS:
                self._previous[number] = signal.signal(number, self._record)

    def uninstall(self) -> None:
        """Give the stop signals back to the handlers they had."""
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous.clear()

    def agreed(self) -> int:
        """The stop signal any rank has received (0: none), the same on every rank."""
        if get_world_size() == 1:
            return self.received
        flag = torch.tensor([self.received], dtype=torch.int64)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=self._group)
        return int(flag.item())

    def _record(self, number: int, frame) -> None:
        self.received = number


def stopping(runner) -> bool:
    """True once the ranks agreed to stop on a signal: hooks then leave slow work (sample grids,
    evaluations) to the resumed run, so that the stop fits the scheduler's grace period."""
    return bool(getattr(runner.train_loop, "stopped_by", 0))


def ignore_others_sigterm(worker_init_fn: Callable[[int], None] | None, worker_id: int) -> None:
    """A DataLoader worker's start: SIGTERM ends it only when the training process sends it; then
    ``worker_init_fn``.

    torch's workers die on a SIGTERM from any other process, and the training process then fails
    at its next batch instead of saving: torchrun and SLURM signal every process of a rank, its
    loader workers included. The training process's own SIGTERM (``Process.terminate`` when it
    shuts its workers down, at exit too) still ends them, as torch's handler does. The signal is
    blocked and taken by a thread that sees its sender; where that is not available (not Linux),
    torch's handler stays.
    """
    if hasattr(signal, "sigwaitinfo"):
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})  # threads started later inherit it
        threading.Thread(target=_exit_on_sigterm_from, args=(os.getppid(),), daemon=True,
                         name="sigterm-from-parent").start()
    if worker_init_fn is not None:
        worker_init_fn(worker_id)


def _exit_on_sigterm_from(parent: int) -> None:
    while True:
        if signal.sigwaitinfo({signal.SIGTERM}).si_pid == parent:
            os._exit(0)
