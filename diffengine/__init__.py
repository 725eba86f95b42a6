"""diffengine: config-driven training for text-to-image diffusion."""
from .version import __version__

__all__ = ["__version__"]
