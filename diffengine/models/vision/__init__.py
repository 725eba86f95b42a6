"""Vision side of a bridge: one entry per generative vision model family."""
from .families import (VISION_FAMILIES, PixArtFamily, UNetFamily, VisionFamily, find_vision_family,
                       vision_family_of)

__all__ = ["VISION_FAMILIES", "PixArtFamily", "UNetFamily", "VisionFamily", "find_vision_family",
           "vision_family_of"]
