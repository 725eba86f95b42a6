"""diffengine: config-driven training for text-to-image diffusion.

``from diffengine import LaViBridge, LaViBridgePipeline`` works; the model classes are imported on
first use, so ``import diffengine`` (and the CLI's ``--help``) does not import torch.
"""
from .version import __version__

# what users import, and where it lives
_PUBLIC = {
    "LaViBridge": "diffengine.models", "LaViBridgePipeline": "diffengine.models",
    "LaViBridgeTextAdapter": "diffengine.models", "StableDiffusion": "diffengine.models",
    "AutoencoderKLTrainer": "diffengine.models", "build_wds_dataloader": "diffengine.datasets",
    "write_wds_shards": "diffengine.datasets",
}

__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str):
    if name in _PUBLIC:
        import importlib

        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'diffengine' has no attribute {name!r}")
