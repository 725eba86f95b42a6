"""Diffusion training losses."""
from .diffusion_loss import diffusion_loss, noised_latents

__all__ = ["diffusion_loss", "noised_latents"]
