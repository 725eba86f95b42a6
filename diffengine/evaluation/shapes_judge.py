"""ShapesBench's judge: colour, background and shape read back from an image, no learned weights.

The background is the median colour of the image's border; the shape is the largest connected
region of pixels far from that colour, its colour the region's median; its outline is compared
with each shape drawn into the region's bounding box and the best overlap (IoU) names it. A
colour is the nearest named colour of the whole world (a red background is "red", so it counts
as wrong for any background the world has).
"""
from __future__ import annotations

import cv2
import numpy as np
from PIL import Image, ImageDraw

from diffengine.datasets.shapes import BACKGROUND_COLORS, FOREGROUND_COLORS, SHAPES, draw_shape

NAMED_COLORS: dict[str, tuple[int, int, int]] = {**FOREGROUND_COLORS, **BACKGROUND_COLORS}
# a pixel this far (RGB distance) from the background colour may belong to the shape; the
# closest two named colours (purple and blue) are 108 apart
FOREGROUND_DISTANCE = 54.0
# fewer shape pixels than this (about a 3 x 3 patch) is no shape at all
MIN_SHAPE_PIXELS = 9
_TEMPLATE_SUPERSAMPLE = 4


def nearest_color(rgb: np.ndarray) -> str:
    """The name of the named colour nearest to ``rgb`` (Euclidean in RGB)."""
    names = list(NAMED_COLORS)
    palette = np.array([NAMED_COLORS[n] for n in names], dtype=np.float32)
    return names[int(np.argmin(np.linalg.norm(palette - rgb, axis=1)))]


def judge_image(image: Image.Image) -> dict[str, str | None]:
    """``{"color", "shape", "background"}`` read from ``image``; None where no shape is found."""
    pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
    border = np.concatenate([pixels[0], pixels[-1], pixels[1:-1, 0], pixels[1:-1, -1]])
    background_rgb = np.median(border, axis=0)
    verdict: dict[str, str | None] = {"color": None, "shape": None,
                                      "background": nearest_color(background_rgb)}
    far = np.linalg.norm(pixels - background_rgb, axis=2) > FOREGROUND_DISTANCE
    region = _largest_region(far)
    if region.sum() < MIN_SHAPE_PIXELS:
        return verdict
    shape_rgb = np.median(pixels[region], axis=0)
    verdict["color"] = nearest_color(shape_rgb)
    # the outline: pixels nearer the shape's colour than the background's (the anti-aliased
    # edge split halfway), then its largest region
    to_shape = np.linalg.norm(pixels - shape_rgb, axis=2)
    to_background = np.linalg.norm(pixels - background_rgb, axis=2)
    mask = _largest_region(to_shape < to_background)
    verdict["shape"] = _best_template(mask)
    return verdict


def _largest_region(mask: np.ndarray) -> np.ndarray:
    """The largest 4-connected region of a boolean mask (all False when there is none)."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=4)
    if count <= 1:
        return np.zeros_like(mask, dtype=bool)
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    return labels == largest


def shape_template(shape: str, box: tuple[int, int, int, int], size: tuple[int, int]) -> np.ndarray:
    """The mask of ``shape`` filling pixel box (left, top, right, bottom; inclusive) of an image of ``size``."""
    scale = _TEMPLATE_SUPERSAMPLE
    width, height = size
    canvas = Image.new("L", (width * scale, height * scale), 0)
    left, top, right, bottom = box
    draw_shape(ImageDraw.Draw(canvas), shape,
               (left * scale, top * scale, (right + 1) * scale - 1, (bottom + 1) * scale - 1), 255)
    coverage = np.asarray(canvas.resize(size, Image.Resampling.BOX), dtype=np.float32) / 255
    return coverage >= 0.5


def _best_template(mask: np.ndarray) -> str:
    """The shape whose template, drawn into ``mask``'s bounding box, overlaps it best (IoU)."""
    rows, cols = np.nonzero(mask)
    box = (int(cols.min()), int(rows.min()), int(cols.max()), int(rows.max()))
    size = (mask.shape[1], mask.shape[0])
    ious = []
    for shape in SHAPES:
        template = shape_template(shape, box, size)
        ious.append((template & mask).sum() / max((template | mask).sum(), 1))
    return SHAPES[int(np.argmax(ious))]
