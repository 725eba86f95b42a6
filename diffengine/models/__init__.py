"""Models: method editors, language and vision families, LoRA and losses."""
from .editors import LaViBridge, LaViBridgeTextAdapter

__all__ = ["LaViBridge", "LaViBridgeTextAdapter"]
