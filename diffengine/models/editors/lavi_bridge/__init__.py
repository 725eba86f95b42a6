"""LaVi-Bridge: a frozen LM and a frozen diffusion model joined by LoRA and a text adapter."""
from .data_preprocessor import LaViBridgeDataPreprocessor
from .lavi_bridge import LaViBridge
from .text_adapter import LaViBridgeTextAdapter

__all__ = ["LaViBridge", "LaViBridgeDataPreprocessor", "LaViBridgeTextAdapter"]
