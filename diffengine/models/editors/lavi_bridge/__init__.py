"""LaVi-Bridge: a frozen LM and a frozen diffusion model joined by LoRA and a text adapter."""
from .lavi_bridge import LaViBridge
from .pipeline import LaViBridgePipeline
from .text_adapter import LaViBridgeTextAdapter

__all__ = ["LaViBridge", "LaViBridgePipeline", "LaViBridgeTextAdapter"]
