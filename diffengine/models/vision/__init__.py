"""Vision side of a bridge: one entry per generative vision model family."""
from .families import VISION_FAMILIES, VisionFamily, vision_family_of

__all__ = ["VISION_FAMILIES", "VisionFamily", "vision_family_of"]
