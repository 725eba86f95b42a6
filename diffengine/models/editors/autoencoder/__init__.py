"""Autoencoder training: the VAE of a latent text-to-image model (ShapesBench's stage 1)."""
from .autoencoder_kl_trainer import AutoencoderKLTrainer

__all__ = ["AutoencoderKLTrainer"]
