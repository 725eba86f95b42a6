"""The DDPM objective of SD-style models: epsilon or v targets, uniform timesteps, optional min-SNR."""
import torch
from diffusers import DDPMScheduler
from diffusers.training_utils import compute_snr

from diffengine.constants import PREDICTION_TYPES

from .objective import NoisedLatents, TrainingObjective


def ddpm_training_scheduler(vision_model: str, prediction_type: str | None = None) -> DDPMScheduler:
    """The training noise schedule of a diffusers base-model folder, with ``prediction_type`` if given."""
    if prediction_type is not None and prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"prediction_type must be one of {', '.join(PREDICTION_TYPES)} (or None: the "
                         f"scheduler's own), got {prediction_type!r}")
    scheduler = DDPMScheduler.from_pretrained(vision_model, subfolder="scheduler")
    if prediction_type is not None:
        scheduler.register_to_config(prediction_type=prediction_type)
    elif scheduler.config.prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"{vision_model}'s scheduler predicts {scheduler.config.prediction_type!r}; "
                         f"training supports {', '.join(PREDICTION_TYPES)}: set prediction_type")
    return scheduler


class DDPMObjective(TrainingObjective):
    """Noise with ``scheduler.add_noise`` at uniform timesteps; the target is the noise, or the
    velocity for a ``v_prediction`` schedule; min-SNR-gamma weighting (Hang et al. 2023) when
    ``snr_gamma`` is set."""

    def __init__(self, scheduler: DDPMScheduler, snr_gamma: float | None = None):
        if snr_gamma is not None and not snr_gamma > 0:
            raise ValueError(f"snr_gamma must be > 0 (or None: plain MSE), got {snr_gamma!r}")
        self.scheduler = scheduler
        self.snr_gamma = snr_gamma

    def noised(self, latents: torch.Tensor) -> NoisedLatents:
        """Uniform timesteps over the schedule, drawn on the latents' device (no host sync)."""
        noise = torch.randn_like(latents)
        timesteps = torch.randint(0, self.scheduler.config.num_train_timesteps, (latents.shape[0],),
                                  device=latents.device)
        noisy = self.scheduler.add_noise(latents, noise, timesteps)
        is_v = self.scheduler.config.prediction_type == "v_prediction"
        target = self.scheduler.get_velocity(latents, noise, timesteps) if is_v else noise
        return NoisedLatents(noisy, timesteps, target, self._min_snr_weights(timesteps, is_v))

    def _min_snr_weights(self, timesteps: torch.Tensor, is_v: bool) -> torch.Tensor | None:
        if self.snr_gamma is None:
            return None
        snr = compute_snr(self.scheduler, timesteps)
        # for v targets the min-SNR weight is divided by SNR + 1 instead of SNR
        weights = torch.clamp(snr, max=self.snr_gamma) / (snr + 1 if is_v else snr)
        # a zero-terminal-SNR schedule (rescale_betas_zero_snr) has SNR 0 at its last step, where
        # min(SNR, gamma) / SNR is 0 / 0; its limit is 1
        return weights if is_v else torch.where(snr == 0, torch.ones_like(weights), weights)

    def record(self) -> dict:
        """``prediction_type`` (resolved: the one trained with) and ``snr_gamma``."""
        return {"prediction_type": self.scheduler.config.prediction_type, "snr_gamma": self.snr_gamma}
