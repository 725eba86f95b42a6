"""The denoising objective: noised latents and their target, and the MSE loss with min-SNR."""
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler
from diffusers.training_utils import compute_snr

from diffengine.constants import PREDICTION_TYPES


def training_scheduler(vision_model: str, prediction_type: str | None = None) -> DDPMScheduler:
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


def noised_latents(latents: torch.Tensor,
                   noise_scheduler) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(noisy_latents, timesteps, target)`` for one training step of a DDPM-style scheduler.

    Timesteps are uniform over the training schedule; the target is the noise, or the velocity
    for a ``v_prediction`` scheduler. Noising runs in the dtype of ``latents`` (pass float32: in
    bf16 the schedule's sqrt(alpha_bar) terms lose precision).
    """
    noise = torch.randn_like(latents)
    timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (latents.shape[0],),
                              device=latents.device)
    noisy = noise_scheduler.add_noise(latents, noise, timesteps)
    if noise_scheduler.config.prediction_type == "v_prediction":
        return noisy, timesteps, noise_scheduler.get_velocity(latents, noise, timesteps)
    return noisy, timesteps, noise


def diffusion_loss(model_pred: torch.Tensor, target: torch.Tensor, timesteps: torch.Tensor,
                   noise_scheduler, snr_gamma: float | None = None) -> torch.Tensor:
    """Mean squared error, optionally weighted per sample by min-SNR-gamma (Hang et al. 2023)."""
    if snr_gamma is None:
        return F.mse_loss(model_pred.float(), target.float(), reduction="mean")
    snr = compute_snr(noise_scheduler, timesteps)
    # for v targets the min-SNR weight is divided by SNR + 1 instead of SNR
    is_v = noise_scheduler.config.prediction_type == "v_prediction"
    weights = torch.clamp(snr, max=snr_gamma) / (snr + 1 if is_v else snr)
    per_sample = F.mse_loss(model_pred.float(), target.float(), reduction="none")
    per_sample = per_sample.mean(dim=list(range(1, per_sample.ndim)))
    return (per_sample * weights).mean()
