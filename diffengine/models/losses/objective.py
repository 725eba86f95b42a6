"""What every training objective hands the model: noised latents, their timesteps and target, and
the (optionally per-sample weighted) mean squared error between the denoiser's output and it."""
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers.schedulers.scheduling_utils import SchedulerMixin


@dataclass(frozen=True)
class NoisedLatents:
    """One training step's noised latents and what the denoiser must predict from them."""

    noisy: torch.Tensor  # (B, C, h, w): the latents the denoiser sees
    timesteps: torch.Tensor  # (B,): the schedule's timestep of each sample, as the denoiser takes it
    target: torch.Tensor  # (B, C, h, w): noise, velocity or flow, as the objective defines
    weights: torch.Tensor | None = None  # (B,): per-sample loss weights; None: plain MSE


class TrainingObjective:
    """A denoising objective over a training schedule; subclasses say how latents are noised.

    ``scheduler`` is the base model's training schedule, from which inference samplers are built;
    ``record()`` is what a bridge stores so that it can be trained the same way again.
    """

    scheduler: SchedulerMixin

    def noised(self, latents: torch.Tensor) -> NoisedLatents:
        """Draw noise and timesteps for float32 ``latents`` (noising in bf16 loses the schedule)."""
        raise NotImplementedError

    def record(self) -> dict:
        """The objective's resolved options, by the model arguments that set them."""
        raise NotImplementedError

    @staticmethod
    def loss(prediction: torch.Tensor, noised: NoisedLatents) -> torch.Tensor:
        """Mean squared error in float32, each sample's mean weighted when ``noised.weights`` is set."""
        if noised.weights is None:
            return F.mse_loss(prediction.float(), noised.target.float(), reduction="mean")
        per_sample = F.mse_loss(prediction.float(), noised.target.float(), reduction="none")
        per_sample = per_sample.mean(dim=list(range(1, per_sample.ndim)))
        return (per_sample * noised.weights.float()).mean()
