import random

import numpy as np
import pytest
import torch
from PIL import Image

from diffengine.datasets import ImageTransform
from diffengine.datasets.transforms import to_rgb


def _ramp(width: int, height: int) -> Image.Image:
    """RGB image whose red channel equals the column index (to identify crop windows)."""
    array = np.zeros((height, width, 3), dtype=np.uint8)
    array[..., 0] = np.arange(width, dtype=np.uint8)[None, :]
    return Image.fromarray(array)


def _columns(tensor: torch.Tensor) -> list[int]:
    """Column indices encoded in the red channel of a transformed _ramp crop."""
    return tensor[0, 0].int().tolist()


def test_shape_dtype_and_range():
    out = ImageTransform(16)(Image.fromarray(np.random.default_rng(0).integers(0, 256, (30, 50, 3), np.uint8)))
    assert out.shape == (3, 16, 16) and out.dtype == torch.uint8 and out.is_contiguous()
    assert torch.all(ImageTransform(8)(Image.new("RGB", (20, 10), "white")) == 255)
    assert torch.all(ImageTransform(8)(Image.new("RGB", (20, 10), "black")) == 0)


def test_upscales_small_images_and_resizes_shorter_side():
    assert ImageTransform(16)(Image.new("RGB", (8, 4))).shape == (3, 16, 16)
    # 64x32 -> shorter side 16 gives 32x16; the center crop keeps resized columns 8..23,
    # i.e. source columns 16..47 (values average neighbouring pairs).
    cols = _columns(ImageTransform(16, random_flip=False)(_ramp(64, 32)))
    assert cols[0] in (16, 17) and cols[-1] in (46, 47) and cols == sorted(cols)


@pytest.mark.parametrize("center_crop", [True, False])
@pytest.mark.parametrize("size", [(97, 64), (50, 83), (20, 14)])
def test_resampling_the_crop_window_matches_resize_then_crop(size, center_crop):
    image = Image.fromarray(np.random.default_rng(1).integers(0, 256, (size[1], size[0], 3), np.uint8))
    out = ImageTransform(32, center_crop=center_crop, random_flip=False)(image, random.Random(5))
    # the reference: resize the whole image with the same filter, then crop the same window
    scale = 32 / min(size)
    resized = image.resize((max(32, round(size[0] * scale)), max(32, round(size[1] * scale))),
                           Image.Resampling.BILINEAR)
    slack_x, slack_y = resized.width - 32, resized.height - 32
    rng = random.Random(5)
    left, top = (slack_x // 2, slack_y // 2) if center_crop else (rng.randint(0, slack_x), rng.randint(0, slack_y))
    expected = np.asarray(resized.crop((left, top, left + 32, top + 32))).transpose(2, 0, 1)
    assert np.abs(out.numpy().astype(int) - expected).max() <= 1


def test_center_crop_without_resize():
    transform = ImageTransform(16, center_crop=True, random_flip=False)
    assert _columns(transform(_ramp(64, 16))) == list(range(24, 40))


def test_random_crop_windows_vary_and_are_valid():
    transform = ImageTransform(16, center_crop=False, random_flip=False)
    starts = set()
    for seed in range(20):
        cols = _columns(transform(_ramp(64, 16), random.Random(seed)))
        assert cols == list(range(cols[0], cols[0] + 16)) and 0 <= cols[0] <= 48
        starts.add(cols[0])
    assert len(starts) > 5
    # The same rng state gives the same crop.
    assert torch.equal(transform(_ramp(64, 16), random.Random(3)), transform(_ramp(64, 16), random.Random(3)))


def test_random_flip_flips_about_half_the_time():
    image = _ramp(16, 16)
    plain = ImageTransform(16, random_flip=False)(image)
    flips = 0
    for seed in range(40):
        out = ImageTransform(16, random_flip=True)(image, random.Random(seed))
        if torch.equal(out, plain.flip(-1)):
            flips += 1
        else:
            assert torch.equal(out, plain)
    assert 8 <= flips <= 32
    assert all(torch.equal(ImageTransform(16, random_flip=False)(image, random.Random(s)), plain) for s in range(10))


def _pixel(image: Image.Image) -> tuple:
    converted = to_rgb(image)
    assert converted.mode == "RGB"
    return converted.getpixel((0, 0))


def test_modes_convert_to_rgb():
    assert _pixel(Image.new("L", (2, 2), 128)) == (128, 128, 128)
    assert _pixel(Image.new("1", (2, 2), 1)) == (255, 255, 255)
    assert _pixel(Image.new("CMYK", (2, 2), (0, 255, 255, 0))) == (255, 0, 0)
    palette = Image.new("P", (2, 2), 1)
    palette.putpalette([0, 0, 0, 0, 255, 0] + [0] * 762)
    assert _pixel(palette) == (0, 255, 0)
    palette.info["transparency"] = 1
    assert _pixel(palette) == (255, 255, 255)
    assert _pixel(Image.new("RGBA", (2, 2), (255, 0, 0, 0))) == (255, 255, 255)
    assert _pixel(Image.new("RGBA", (2, 2), (255, 0, 0, 255))) == (255, 0, 0)
    assert _pixel(Image.new("LA", (2, 2), (0, 0))) == (255, 255, 255)
    assert _pixel(Image.new("LA", (2, 2), (0, 255))) == (0, 0, 0)
    sixteen_bit = Image.fromarray(np.full((2, 2), 32768, dtype=np.uint16))
    assert sixteen_bit.mode.startswith("I;16") and _pixel(sixteen_bit) == (128, 128, 128)


@pytest.mark.parametrize("mode", ["L", "CMYK", "P", "RGBA", "LA", "1"])
def test_transform_accepts_every_mode(mode):
    out = ImageTransform(8)(Image.new(mode, (12, 10)))
    assert out.shape == (3, 8, 8) and out.dtype == torch.uint8


def test_rejects_bad_resolution():
    with pytest.raises(ValueError):
        ImageTransform(0)
