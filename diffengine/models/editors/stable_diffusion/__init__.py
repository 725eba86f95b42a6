"""Stable Diffusion: full training of a UNet with its own text encoder (ShapesBench's stage 1)."""
from .stable_diffusion import StableDiffusion

__all__ = ["StableDiffusion"]
