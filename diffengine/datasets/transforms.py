"""Image preprocessing for text-to-image training (PIL/numpy only: torchvision is unusable here)."""
from __future__ import annotations

import random
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image

_ALPHA_MODES = {"RGBA", "RGBa", "LA", "La", "PA"}


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode to RGB, compositing transparency onto white."""
    if image.mode == "RGB":
        return image
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in _ALPHA_MODES:
        # Transparent pixels often hold black or garbage colour; white is what viewers show.
        white = Image.new("RGBA", image.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, image.convert("RGBA")).convert("RGB")
    if image.mode.startswith("I;16"):
        # PIL clips 16-bit values to 255 when converting; keep the top byte instead.
        image = Image.fromarray((np.asarray(image, dtype=np.uint16) >> 8).astype(np.uint8), mode="L")
    return image.convert("RGB")


class CropOffset(NamedTuple):
    """Where a square crop sits in the resized image: its top margin, and its left and right margins.

    SDXL's crop time ids are ``(top, left)``; the image mirrored left to right has the crop at
    ``(top, right)``, which is what a stored flipped view (``prep-latents --flip``) records.
    """

    top: int
    left: int
    right: int


class ImageTransform:
    """Resize the shorter side, crop to a square, optionally flip; uint8 CHW output."""

    def __init__(self, resolution: int, center_crop: bool = True, random_flip: bool = True) -> None:
        if resolution < 1:
            raise ValueError(f"resolution must be positive, got {resolution}")
        self.resolution = resolution
        self.center_crop = center_crop
        self.random_flip = random_flip

    def __call__(self, image: Image.Image, rng: random.Random | None = None) -> torch.Tensor:
        """Return a uint8 tensor of shape (3, resolution, resolution) (see ``crop_and_flip``)."""
        return self.crop_and_flip(image, rng)[0]

    def crop_and_flip(self, image: Image.Image,
                      rng: random.Random | None = None) -> tuple[torch.Tensor, CropOffset]:
        """Return the uint8 (3, resolution, resolution) tensor and the crop's offset in the resized
        image (its ``(top, left)`` is what SDXL's crop time ids want).

        Pixels stay uint8 until the model's data preprocessor normalises them on the device: a
        float32 batch is 4x the bytes to stack, pass between processes and copy to the GPU.
        The offset is that of the image as trained, so after a flip it is measured in the mirrored
        image (``left`` becomes the margin right of the crop). That is what diffusers' SDXL training
        example records: it flips the resized image first and then crops, so its offsets always
        describe the pixels the model sees. Cropping first and flipping the crop (cheaper: a
        smaller image to flip) gives the same pixels, and the mirrored offset keeps the same meaning.
        """
        rng = rng if rng is not None else random  # the module-level RNG, seeded per DataLoader worker
        size = self.resolution
        image = to_rgb(image)
        width, height = image.size
        scale = size / min(width, height)
        new_width, new_height = max(size, round(width * scale)), max(size, round(height * scale))
        slack_x, slack_y = new_width - size, new_height - size
        if self.center_crop:
            left, top = slack_x // 2, slack_y // 2
        else:
            left, top = rng.randint(0, slack_x), rng.randint(0, slack_y)
        if (new_width, new_height) == image.size:
            image = image.crop((left, top, left + size, top + size))
        else:
            # Resampling only the crop window gives the pixels of resize-then-crop (to rounding)
            # for 20-30% less work. PIL's bilinear filter widens its support when shrinking, so
            # downscaling is antialiased.
            x_scale, y_scale = width / new_width, height / new_height
            window = (left * x_scale, top * y_scale, (left + size) * x_scale, (top + size) * y_scale)
            image = image.resize((size, size), Image.Resampling.BILINEAR, box=window)
        crop = CropOffset(top, left, slack_x - left)
        if self.random_flip and rng.random() < 0.5:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            crop = CropOffset(top, crop.right, crop.left)
        pixels = torch.from_numpy(np.ascontiguousarray(np.asarray(image).transpose(2, 0, 1)))
        return pixels, crop

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(resolution={self.resolution}, "
                f"center_crop={self.center_crop}, random_flip={self.random_flip})")
