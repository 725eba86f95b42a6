"""Diffusion training losses."""
from .diffusion_loss import diffusion_loss

__all__ = ["diffusion_loss"]
