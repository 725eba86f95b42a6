"""Generated images as PIL images, refused when a pixel is not finite."""
import numpy as np
from diffusers.utils import numpy_to_pil
from PIL import Image

from diffengine.errors import NonFiniteImagesError


def finite_pil_images(images: np.ndarray) -> list[Image.Image]:
    """A pipeline's ``output_type="np"`` images as PIL images; ``NonFiniteImagesError`` if one holds
    a NaN, which the conversion would turn into a black picture (and a score into chance)."""
    broken = int((~np.isfinite(images)).reshape(len(images), -1).any(axis=1).sum())
    if broken:
        raise NonFiniteImagesError(f"the model generated non-finite pixels in {broken} of {len(images)} "
                                   "image(s): its weights have diverged (a training whose loss went "
                                   "non-finite?), or a float16 VAE overflowed (use bfloat16 or float32)")
    return numpy_to_pil(images)
