"""MMEngine's RuntimeInfoHook, reading the losses to the host only where they are logged or saved."""
import torch
from mmengine.hooks import CheckpointHook, LoggerHook, RuntimeInfoHook

from diffengine.registry import HOOKS

from ..loops import saves_now
from ..stop_signal import stopping


@HOOKS.register_module()
class DeferredRuntimeInfoHook(RuntimeInfoHook):
    """Keeps each iteration's losses on the device and reads them all in one host sync.

    MMEngine's ``RuntimeInfoHook`` turns every loss into a Python float at every iteration: a
    host-device sync that idles the GPU while the host queues the next step. This hook puts the
    same values, in the same order, into the message hub at the iterations where something reads
    them (a ``LoggerHook`` logs, a ``CheckpointHook`` saves, the last iteration, a stop on
    SIGTERM), and there also
    reads the gradient norms that a ``GuardedOptimWrapper`` with ``host_read_interval > 1`` keeps
    on the device; at the end of training it has the wrapper log the steps it skipped. Everything
    else is MMEngine's hook; it replaces it as ``default_hooks.runtime_info``.
    """

    def __init__(self) -> None:
        super().__init__()
        self._unread: list[tuple[str, torch.Tensor]] = []
        self._loggers: list[LoggerHook] = []
        self._checkpointers: list[CheckpointHook] = []

    def before_train(self, runner) -> None:
        """Find the hooks whose iterations need the values on the host."""
        super().before_train(runner)
        self._loggers = [hook for hook in runner.hooks if isinstance(hook, LoggerHook)]
        self._checkpointers = [hook for hook in runner.hooks
                               if isinstance(hook, CheckpointHook) and not hook.by_epoch]

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs: dict | None = None) -> None:
        """Keep tensor outputs for later; read everything kept when this iteration is logged or saved."""
        for key, value in (outputs or {}).items():
            if isinstance(value, torch.Tensor):
                self._unread.append((f"train/{key}", value.detach()))
            else:
                runner.message_hub.update_scalar(f"train/{key}", value)
        if self._values_needed(runner, batch_idx):
            self.read(runner)

    def after_train(self, runner) -> None:
        """Whatever is left (a run stopped between log intervals), then the optimizer steps a
        ``GuardedOptimWrapper`` skipped, if any."""
        self.read(runner)
        log_skipped_steps = getattr(runner.optim_wrapper, "log_skipped_steps", None)
        if log_skipped_steps is not None:
            log_skipped_steps()

    def read(self, runner) -> None:
        """Move the kept values to the message hub in order (one sync), and the optimizer's norms."""
        if self._unread:
            values = torch.stack([value.float().reshape(()) for _, value in self._unread]).tolist()
            for (key, _), value in zip(self._unread, values, strict=True):
                runner.message_hub.update_scalar(key, value)
            self._unread.clear()
        read_device_norms = getattr(runner.optim_wrapper, "read_device_norms", None)
        if read_device_norms is not None:
            read_device_norms()

    def _values_needed(self, runner, batch_idx: int) -> bool:
        if self.is_last_train_iter(runner) or stopping(runner):  # a stop saves a checkpoint
            return True
        if any(self.every_n_inner_iters(batch_idx, hook.interval)
               or self.end_of_epoch(runner.train_dataloader, batch_idx) for hook in self._loggers):
            return True
        return any(saves_now(runner, hook) for hook in self._checkpointers)
