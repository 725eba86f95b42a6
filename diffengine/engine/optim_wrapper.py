"""Optimizer wrappers that never let a non-finite gradient reach the weights.

A diverging run (a learning rate too high, a bad batch, an fp16 overflow) produces a NaN or
infinite gradient. MMEngine's wrappers step on it, and from then on every weight is NaN. These
wrappers measure the gradient norm before each step (one host sync per optimizer step), skip the
step when it is not finite (the weights and the optimizer's moments stay as they were), log it,
and stop the run with ``NonFiniteTrainingError`` after ``max_consecutive_nonfinite`` skipped
steps in a row. Under DDP the norm is taken after the all-reduce, so all ranks decide alike.
"""
import logging

import torch
from mmengine.logging import print_log
from mmengine.optim import AmpOptimWrapper, OptimWrapper

from diffengine.errors import NonFiniteTrainingError
from diffengine.registry import OPTIM_WRAPPERS

SKIPPED_STEPS_KEY = "train/skipped_steps"


class _SkipNonFiniteSteps:
    """Mixin for an MMEngine optimizer wrapper: skip steps whose gradient norm is NaN or infinite."""

    def __init__(self, *args, max_consecutive_nonfinite: int = 10, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if isinstance(max_consecutive_nonfinite, bool) or not isinstance(max_consecutive_nonfinite, int) \
                or max_consecutive_nonfinite < 1:
            raise ValueError("optim_wrapper.max_consecutive_nonfinite must be an integer >= 1, "
                             f"got {max_consecutive_nonfinite!r}")
        self.max_consecutive_nonfinite = max_consecutive_nonfinite
        self.skipped_steps: int | None = None  # read from the (resumed) message hub at the first step
        self.consecutive_nonfinite = 0
        self._last_loss: torch.Tensor | None = None

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
        if torch.isfinite(norm):
            self.consecutive_nonfinite = 0
            self._clip(norm)
            self._apply_step(**kwargs)
        else:
            self._skip_step(float(norm))
        self.message_hub.update_scalar(SKIPPED_STEPS_KEY, self.skipped_steps)

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
        if self.clip_func is torch.nn.utils.clip_grad_norm_ and set(self.clip_grad_kwargs) == {"max_norm"}:
            torch.nn.utils.clip_grads_with_norm_(self._params_with_grads(), self.clip_grad_kwargs["max_norm"],
                                                 norm, foreach=True)
            self.message_hub.update_scalar(f"train/{self.grad_name}", float(norm))
        else:
            self._clip_grad()

    def _apply_step(self, **kwargs) -> None:
        self.optimizer.step(**kwargs)  # OptimWrapper.step without its clipping, done by _clip

    def _skip_step(self, norm: float) -> None:
        self.skipped_steps += 1
        self.consecutive_nonfinite += 1
        loss = float(self._last_loss) if self._last_loss is not None else float("nan")
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
        **kwargs: ``OptimWrapper``'s arguments (``optimizer``, ``clip_grad``, ``accumulative_counts``).
    """


@OPTIM_WRAPPERS.register_module()
class GuardedAmpOptimWrapper(_SkipNonFiniteSteps, AmpOptimWrapper):
    """MMEngine's ``AmpOptimWrapper`` (mixed precision, loss scaling) with the same guard.

    The gradients are unscaled before the norm is taken. An fp16 overflow is a skipped step here
    as in ``GradScaler`` (which lowers the loss scale after it), and counts towards the stop.
    """

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
