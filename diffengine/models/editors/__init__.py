"""Model editors: one folder per training method."""
from .autoencoder import AutoencoderKLTrainer
from .lavi_bridge import LaViBridge, LaViBridgePipeline, LaViBridgeTextAdapter
from .stable_diffusion import StableDiffusion

__all__ = ["AutoencoderKLTrainer", "LaViBridge", "LaViBridgePipeline", "LaViBridgeTextAdapter", "StableDiffusion"]
