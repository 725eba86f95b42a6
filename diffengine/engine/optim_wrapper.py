"""Optimizer wrappers that never let a non-finite gradient reach the weights.

A diverging run (a learning rate too high, a bad batch, an fp16 overflow) produces a NaN or
infinite gradient. MMEngine's wrappers step on it, and from then on every weight is NaN. These
wrappers measure the gradient norm before each step, skip the step when it is not finite (the
weights and the optimizer's moments stay as they were), log it, and stop the run with
``NonFiniteTrainingError`` after ``max_consecutive_nonfinite`` skipped steps in a row. Under DDP
the norm is taken after the all-reduce, so all ranks decide alike.

Deciding on the host costs a host-device sync per step, which idles a GPU while the host queues
the next step. With ``host_read_interval=N > 1`` and an optimizer that can skip a step on the
device (``AdamW(fused=True)``, ``Adam(fused=True)``: they take a ``found_inf`` flag, as from a
GradScaler), the skip happens on the device and the host reads the norms of up to N steps at
once: at that read the skipped steps are counted and logged, and a streak stops the run. The
weights are safe either way; only the stop and the counts come up to N - 1 steps later.
``DeferredRuntimeInfoHook`` reads at every log interval, so the logs stay exact.
"""
import logging
import math

import torch
from mmengine.logging import print_log
from mmengine.optim import AmpOptimWrapper, OptimWrapper

from diffengine.errors import NonFiniteTrainingError
from diffengine.precision import autocast_dtype_name
from diffengine.registry import OPTIM_WRAPPERS

SKIPPED_STEPS_KEY = "train/skipped_steps"


class _SkipNonFiniteSteps:
    """Mixin for an MMEngine optimizer wrapper: skip steps whose gradient norm is NaN or infinite."""

    def __init__(self, *args, max_consecutive_nonfinite: int = 10, host_read_interval: int = 1,
                 **kwargs) -> None:
        super().__init__(*args, **kwargs)
        for name, value in (("max_consecutive_nonfinite", max_consecutive_nonfinite),
                            ("host_read_interval", host_read_interval)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"optim_wrapper.{name} must be an integer >= 1, got {value!r}")
        if host_read_interval > 1 and not getattr(self.optimizer, "_step_supports_amp_scaling", False):
            raise ValueError(f"optim_wrapper.host_read_interval={host_read_interval} needs an optimizer "
                             "that skips a step on the device: set optim_wrapper.optimizer.fused=True "
                             f"({type(self.optimizer).__name__} is not fused), or host_read_interval=1")
        self.max_consecutive_nonfinite = max_consecutive_nonfinite
        self.host_read_interval = host_read_interval
        self.skipped_steps: int | None = None  # read from the (resumed) message hub at the first step
        self.consecutive_nonfinite = 0
        self._last_loss: torch.Tensor | None = None
        self._unread: list[tuple[torch.Tensor, torch.Tensor]] = []  # (gradient norm, loss) per step

    def update_params(self, loss: torch.Tensor, step_kwargs: dict | None = None,
                      zero_kwargs: dict | None = None) -> None:
        """Backward, then step unless the gradients are non-finite (see the module docstring)."""
        self._last_loss = loss.detach()
        super().update_params(loss, step_kwargs, zero_kwargs)

    def step(self, **kwargs) -> None:
        """Step when the gradient norm is finite; otherwise skip and count the step."""
        if self.skipped_steps is None:
            logged = self.message_hub.log_scalars.get(SKIPPED_STEPS_KEY)
            self.skipped_steps = int(logged.current()) if logged is not None else 0
        norm = self._gradient_norm()
        if self.host_read_interval > 1:
            self._step_unless_nonfinite_on_device(norm, **kwargs)
            return
        if torch.isfinite(norm):
            self.consecutive_nonfinite = 0
            self._clip(norm)
            self._log_gradient_norm(float(norm))
            self._apply_step(**kwargs)
        else:
            self._skip_step(float(norm))
        self.message_hub.update_scalar(SKIPPED_STEPS_KEY, self.skipped_steps)

    def read_device_norms(self) -> None:
        """Count, log and act on the steps whose norms are still on the device (one host sync)."""
        if not self._unread:
            return
        values = torch.stack([torch.stack(pair).float() for pair in self._unread]).tolist()
        self._unread.clear()
        for norm, loss in values:
            if math.isfinite(norm):
                self.consecutive_nonfinite = 0
                self._log_gradient_norm(norm)
            else:
                self._count_skipped_step(norm, loss)
        self.message_hub.update_scalar(SKIPPED_STEPS_KEY, self.skipped_steps)

    def log_skipped_steps(self) -> None:
        """At the end of training: how many steps were skipped, and a warning when the last were.

        A streak shorter than ``max_consecutive_nonfinite`` does not stop the run, so a run can
        end inside one; its final weights are then those from before the streak.
        """
        if not self.skipped_steps:
            return
        if self.consecutive_nonfinite:
            print_log(f"training ended with its last {self.consecutive_nonfinite} optimizer steps skipped "
                      "(non-finite gradient norms): the final weights and bridge are those from before "
                      f"them ({self.skipped_steps} steps skipped in this run)",
                      logger="current", level=logging.WARNING)
        else:
            print_log(f"{self.skipped_steps} optimizer steps were skipped in this run (non-finite "
                      "gradient norms), none of them at the end", logger="current", level=logging.INFO)

    def state_dict(self) -> dict:
        """The optimizer state, after reading the norms still on the device (a checkpoint is exact)."""
        self.read_device_norms()
        return super().state_dict()

    def _step_unless_nonfinite_on_device(self, norm: torch.Tensor, **kwargs) -> None:
        """Clip and step with the fused optimizer's ``found_inf`` flag: no host sync."""
        self._clip(norm)
        # a GradScaler (the mixed-precision wrapper) replaces this flag by its own and removes it
        self.optimizer.found_inf = (~torch.isfinite(norm)).float()
        try:
            self._apply_step(**kwargs)
        finally:
            vars(self.optimizer).pop("found_inf", None)
        loss = self._last_loss if self._last_loss is not None else torch.full_like(norm, math.nan)
        self._unread.append((norm.detach(), loss.to(norm.device, torch.float32)))
        if len(self._unread) >= self.host_read_interval:
            self.read_device_norms()

    def get_lr(self) -> dict[str, list[float]]:
        """Learning rates by group name (``<name>_lr``), as MMEngine's RuntimeInfoHook logs them.

        MMEngine would log the first group's rate as ``lr`` and ``optimizer.lr`` as ``base_lr``,
        neither of which is a rate a named group trains with.
        """
        groups = self.optimizer.param_groups
        if all("name" in group for group in groups):
            return {f"{group['name']}_lr": [group["lr"]] for group in groups}
        return {"lr": [group["lr"] for group in groups]}

    def _params_with_grads(self) -> list[torch.Tensor]:
        return [p for group in self.optimizer.param_groups for p in group["params"] if p.grad is not None]

    def _gradient_norm(self) -> torch.Tensor:
        grads = [p.grad for p in self._params_with_grads()]
        if not grads:
            return torch.zeros(())
        return torch.nn.utils.get_total_norm(grads, foreach=True)

    def _clip(self, norm: torch.Tensor) -> None:
        """MMEngine's ``clip_grad``; clipping by the 2-norm reuses the norm just taken instead of a second pass."""
        if not self.clip_grad_kwargs:
            return
        if self._clips_by_norm():
            torch.nn.utils.clip_grads_with_norm_(self._params_with_grads(), self.clip_grad_kwargs["max_norm"],
                                                 norm, foreach=True)
        else:
            self._clip_grad()

    def _clips_by_norm(self) -> bool:
        return (bool(self.clip_grad_kwargs) and self.clip_func is torch.nn.utils.clip_grad_norm_
                and set(self.clip_grad_kwargs) == {"max_norm"})

    def _log_gradient_norm(self, norm: float) -> None:
        """The norm ``clip_grad`` logs, under MMEngine's name, when clipping by the 2-norm."""
        if self._clips_by_norm():
            self.message_hub.update_scalar(f"train/{self.grad_name}", norm)

    def _apply_step(self, **kwargs) -> None:
        self.optimizer.step(**kwargs)  # OptimWrapper.step without its clipping, done by _clip

    def _skip_step(self, norm: float) -> None:
        loss = float(self._last_loss) if self._last_loss is not None else math.nan
        self._count_skipped_step(norm, loss)

    def _count_skipped_step(self, norm: float, loss: float) -> None:
        self.skipped_steps += 1
        self.consecutive_nonfinite += 1
        print_log(f"non-finite gradient norm {norm} (loss {loss}): optimizer step skipped, weights "
                  f"unchanged ({self.consecutive_nonfinite} in a row, {self.skipped_steps} in this run)",
                  logger="current", level=logging.WARNING)
        if self.consecutive_nonfinite >= self.max_consecutive_nonfinite:
            raise NonFiniteTrainingError(
                f"training stopped: {self.consecutive_nonfinite} optimizer steps in a row had a "
                f"non-finite gradient norm (last loss {loss}); no weights or checkpoints were "
                "written from them. Resume the last checkpoint with lower learning rates, e.g. "
                "--resume --cfg-options optim_wrapper.paramwise_cfg.group_lr.adapter=... "
                "(optim_wrapper.max_consecutive_nonfinite sets how many skipped steps stop a run)")


@OPTIM_WRAPPERS.register_module()
class GuardedOptimWrapper(_SkipNonFiniteSteps, OptimWrapper):
    """MMEngine's ``OptimWrapper`` that skips non-finite steps and stops a diverged run.

    Args:
        max_consecutive_nonfinite: skipped steps in a row that stop training.
        host_read_interval: optimizer steps whose gradient norms the host reads at once (1: every
            step; more needs a fused optimizer, see the module docstring).
        **kwargs: ``OptimWrapper``'s arguments (``optimizer``, ``clip_grad``, ``accumulative_counts``).
    """


@OPTIM_WRAPPERS.register_module()
class GuardedAmpOptimWrapper(_SkipNonFiniteSteps, AmpOptimWrapper):
    """MMEngine's ``AmpOptimWrapper`` (mixed precision, loss scaling) with the same guard.

    The gradients are unscaled before the norm is taken. An fp16 overflow is a skipped step here
    as in ``GradScaler`` (which lowers the loss scale after it), and counts towards the stop.

    Args:
        dtype: the autocast format: ``bfloat16``, ``float16`` (MMEngine's default, None), or
            ``auto``: bfloat16 where the GPU has it, else float16 with loss scaling.
        **kwargs: ``GuardedOptimWrapper``'s and ``AmpOptimWrapper``'s other arguments.
    """

    def __init__(self, *args, dtype: str | torch.dtype | None = None, **kwargs) -> None:
        super().__init__(*args, dtype=autocast_dtype_name(dtype), **kwargs)

    def _gradient_norm(self) -> torch.Tensor:
        self.loss_scaler.unscale_(self.optimizer)
        return super()._gradient_norm()

    def _apply_step(self, **kwargs) -> None:
        # AmpOptimWrapper.step without its unscale_ and clipping, done above
        self.loss_scaler.step(self.optimizer, **kwargs)
        self.loss_scaler.update(self._scale_update_param)

    def _skip_step(self, norm: float) -> None:
        self.loss_scaler.update(self._scale_update_param)
        super()._skip_step(norm)
