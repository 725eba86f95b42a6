"""CLIP score (Hessel et al. 2021, as torchmetrics computes it) with a local CLIP model."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

CLIP_MODEL_HELP = (
    "diffengine never downloads weights; on a machine with internet save a CLIP model once, e.g. "
    "`python -c \"from transformers import CLIPModel, CLIPProcessor; "
    "[c.from_pretrained('openai/clip-vit-base-patch32').save_pretrained('PATH') "
    "for c in (CLIPModel, CLIPProcessor)]\"`, copy PATH here and pass --clip-model PATH")


def check_clip_folder(path: str | Path) -> None:
    """Raise FileNotFoundError or ValueError unless ``path`` holds a CLIP model, its image processor
    config and its tokenizer: read from the files, before any weights load."""
    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"--clip-model {path}: no CLIP model there. {CLIP_MODEL_HELP}")
    try:
        model_type = json.loads((path / "config.json").read_text()).get("model_type")
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"--clip-model {path}/config.json is not valid JSON: {error}") from None
    if model_type != "clip":
        raise ValueError(f"--clip-model {path} holds a {model_type!r} model, not a CLIP model (model_type 'clip'). "
                         f"{CLIP_MODEL_HELP}")
    missing = [what for what, present in (
        ("image processor (preprocessor_config.json, or processor_config.json as CLIPProcessor writes it)",
         (path / "preprocessor_config.json").is_file() or _has_processor_entry(path, "image_processor")),
        ("tokenizer (tokenizer.json, or vocab.json and merges.txt)",
         any((path / name).is_file() for name in ("tokenizer.json", "vocab.json"))))
        if not present]
    if missing:
        raise FileNotFoundError(f"--clip-model {path} has no {' and no '.join(missing)}: save CLIPProcessor "
                                f"beside the model. {CLIP_MODEL_HELP}")


def _has_processor_entry(path: Path, entry: str) -> bool:
    """Whether ``processor_config.json`` (transformers 5's ``ProcessorMixin.save_pretrained``) holds ``entry``."""
    try:
        return entry in json.loads((path / "processor_config.json").read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, TypeError):
        return False


class ClipScorer:
    """``100 * max(cos(image, text), 0)`` per image-text pair with a ``CLIPModel`` folder.

    The folder must hold the model, its tokenizer and its image processor config (what
    ``CLIPModel.save_pretrained`` and ``CLIPProcessor.save_pretrained`` write).
    """

    def __init__(self, path: str | Path, device: str | torch.device = "cpu"):
        from transformers import AutoTokenizer, CLIPModel

        path = Path(path)
        check_clip_folder(path)
        self.model = CLIPModel.from_pretrained(path).to(device).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.image_processor = _pil_image_processor_class().from_pretrained(path)
        self.device = torch.device(device)

    @torch.no_grad()
    def __call__(self, images: list[Image.Image], texts: list[str]) -> np.ndarray:
        """One score per (image, text) pair."""
        if len(images) != len(texts):
            raise ValueError(f"got {len(images)} images for {len(texts)} texts")
        pixels = self.image_processor(images=images, return_tensors="pt")["pixel_values"]
        tokens = self.tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
        image_embeds = self.model.get_image_features(pixel_values=pixels.to(self.device))
        text_embeds = self.model.get_text_features(**tokens.to(self.device))
        image_embeds, text_embeds = (_as_tensor(e) for e in (image_embeds, text_embeds))
        cosine = torch.nn.functional.cosine_similarity(image_embeds, text_embeds, dim=-1)
        return (100 * cosine.clamp(min=0)).cpu().numpy()


def _as_tensor(features) -> torch.Tensor:
    """Projected features (transformers 5 returns an output object, 4.x a tensor)."""
    return features if isinstance(features, torch.Tensor) else features.pooler_output


def _pil_image_processor_class():
    """CLIP's image processor that needs no torchvision (transformers 5 names it ``...Pil``)."""
    try:
        from transformers import CLIPImageProcessorPil
        return CLIPImageProcessorPil
    except ImportError:
        from transformers import CLIPImageProcessor
        return CLIPImageProcessor
