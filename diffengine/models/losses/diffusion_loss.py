"""MSE diffusion loss on epsilon or v targets, with optional min-SNR weighting."""
import torch
import torch.nn.functional as F
from diffusers.training_utils import compute_snr


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
