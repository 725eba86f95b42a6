"""Models: method editors, language and vision families, LoRA and losses."""
from .data_preprocessor import DiffusionDataPreprocessor
from .editors import AutoencoderKLTrainer, LaViBridge, LaViBridgeTextAdapter, StableDiffusion

__all__ = ["AutoencoderKLTrainer", "DiffusionDataPreprocessor", "LaViBridge",
           "LaViBridgeTextAdapter", "StableDiffusion"]
