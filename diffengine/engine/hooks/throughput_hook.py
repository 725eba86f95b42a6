"""Log training throughput in samples per second, summed over all ranks."""
import time

from mmengine.hooks import Hook

from diffengine.contracts import TEXT_KEY
from diffengine.registry import HOOKS


@HOOKS.register_module()
class ThroughputHook(Hook):
    """Writes ``train/samples_per_s`` (global batch / wall time between iterations).

    Host wall time only, no device synchronisation: averaged over the logger's window it is the
    steady-state rate, since an unsynchronised step is paid for by a later one.
    """

    priority = "NORMAL"  # before LoggerHook (BELOW_NORMAL) reads the message hub

    def __init__(self):
        self._last = None

    def before_train(self, runner) -> None:
        """Start timing at the first iteration, not at hook construction."""
        self._last = None

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        """Record the samples per second of the iteration that just ended."""
        now = time.perf_counter()
        if self._last is not None and data_batch is not None:
            samples = len(data_batch["inputs"][TEXT_KEY]) * runner.world_size
            runner.message_hub.update_scalar("train/samples_per_s", samples / (now - self._last))
        self._last = now
