"""Diffusion training losses."""
from .diffusion_loss import diffusion_loss, noised_latents, training_scheduler

__all__ = ["diffusion_loss", "noised_latents", "training_scheduler"]
