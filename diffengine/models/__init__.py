"""Models: method editors, language and vision families, LoRA and losses."""
from .data_preprocessor import DiffusionDataPreprocessor
from .editors import AutoencoderKLTrainer, LaViBridge, LaViBridgePipeline, LaViBridgeTextAdapter, StableDiffusion

__all__ = ["AutoencoderKLTrainer", "DiffusionDataPreprocessor", "LaViBridge", "LaViBridgePipeline",
           "LaViBridgeTextAdapter", "StableDiffusion"]
