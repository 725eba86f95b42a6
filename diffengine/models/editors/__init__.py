"""Model editors: one folder per training method."""
from .lavi_bridge import LaViBridge, LaViBridgeTextAdapter

__all__ = ["LaViBridge", "LaViBridgeTextAdapter"]
