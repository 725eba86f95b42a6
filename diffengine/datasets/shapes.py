"""ShapesBench's world: one shape of one colour on a plain background, with captions and splits.

Everything is deterministic: a render depends only on its attributes and the random generator
handed in, and the held-out splits (phrasings never trained on, attribute combinations never
trained on) are fixed lists. The judge that reads attributes back from images lives in
``diffengine.evaluation.shapes_judge``.
"""
from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

# far apart in RGB so that a blurry render still has one nearest colour
FOREGROUND_COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40), "orange": (245, 140, 20), "yellow": (235, 215, 40),
    "green": (40, 170, 70), "blue": (40, 80, 220), "purple": (150, 60, 200),
}
# blue is also a foreground colour: which of two colour words is the shape's must come from the
# sentence's structure, not from the word alone
BACKGROUND_COLORS: dict[str, tuple[int, int, int]] = {
    "white": (245, 245, 245), "black": (20, 20, 20), "blue": FOREGROUND_COLORS["blue"],
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "cross")
ATTRIBUTES: tuple[str, ...] = ("color", "shape", "background")
# the side in pixels of the world's images: the stage-1 model's, and the one the judge's
# thresholds are set for
IMAGE_SIZE = 32

TRAIN_PHRASINGS: tuple[str, ...] = (
    "a {color} {shape} on a {background} background",
    "a {background} backdrop with a {color} {shape}",
    "{color} {shape}, {background} background",
    "a picture of a {color} {shape} over {background}",
)
# new sentence structures made only of words the training phrasings use, so every tokenizer
# (including the stage-1 model's own) knows each word and only the structure is new
HELDOUT_PHRASINGS: tuple[str, ...] = (
    "on a {background} background, a {color} {shape}",
    "a {color} {shape} with a {background} backdrop",
    "{background} background, a picture of a {color} {shape}",
)
# supersampling factor of the renders: edges are anti-aliased like those of real photographs
_SUPERSAMPLE = 4


@dataclass(frozen=True, order=True)
class ShapeSpec:
    """The three attributes of a ShapesBench image."""

    color: str
    shape: str
    background: str

    def caption(self, phrasing: str) -> str:
        """The caption of this image in one phrasing (a ``str.format`` template), "an" before a vowel."""
        return with_article(phrasing.format(color=self.color, shape=self.shape, background=self.background))

    def as_dict(self) -> dict[str, str]:
        """``{"color": ..., "shape": ..., "background": ...}``."""
        return {"color": self.color, "shape": self.shape, "background": self.background}


def with_article(text: str) -> str:
    """``text`` with "an" for each "a" before a vowel ("a orange circle" -> "an orange circle")."""
    return re.sub(r"\ba (?=[aeiou])", "an ", text)


def all_specs() -> list[ShapeSpec]:
    """Every (colour, shape, background) triple of the world; a shape never has its background's colour."""
    return [ShapeSpec(c, s, b) for c, s, b in itertools.product(FOREGROUND_COLORS, SHAPES,
                                                                BACKGROUND_COLORS)
            if FOREGROUND_COLORS[c] != BACKGROUND_COLORS[b]]


def heldout_specs(fraction: float = 0.2, seed: int = 0) -> list[ShapeSpec]:
    """A fixed ``fraction`` of the triples, never trained on; every single value stays in training.

    Drawn with ``seed``; a draw that would leave some colour, shape or background without a
    training triple is redrawn.
    """
    specs = all_specs()
    count = round(fraction * len(specs))
    rng = np.random.default_rng(seed)
    while True:
        chosen = [specs[i] for i in sorted(rng.choice(len(specs), size=count, replace=False))]
        train = set(specs) - set(chosen)
        if all({getattr(s, a) for s in train} == {getattr(s, a) for s in specs} for a in ATTRIBUTES):
            return chosen


def train_specs(fraction: float = 0.2, seed: int = 0) -> list[ShapeSpec]:
    """The triples training data is drawn from: all but ``heldout_specs(fraction, seed)``."""
    heldout = set(heldout_specs(fraction, seed))
    return [s for s in all_specs() if s not in heldout]


def render(spec: ShapeSpec, size: int, rng: np.random.Generator) -> tuple[Image.Image, tuple]:
    """The image of ``spec`` at a random scale and position; returns it and the shape's box.

    The shape's half-extent is 20-34 % of the image side and the shape lies wholly inside it.
    The box is ``(left, top, right, bottom)`` in pixels of the returned image.
    """
    big = size * _SUPERSAMPLE
    half = float(rng.uniform(0.20, 0.34)) * big
    cx, cy = (float(v) for v in rng.uniform(half + _SUPERSAMPLE, big - half - _SUPERSAMPLE, size=2))
    image = Image.new("RGB", (big, big), BACKGROUND_COLORS[spec.background])
    draw_shape(ImageDraw.Draw(image), spec.shape, (cx - half, cy - half, cx + half, cy + half),
               FOREGROUND_COLORS[spec.color])
    box = tuple(v / _SUPERSAMPLE for v in (cx - half, cy - half, cx + half, cy + half))
    return image.resize((size, size), Image.Resampling.BOX), box


def draw_shape(draw: ImageDraw.ImageDraw, shape: str, box: tuple[float, float, float, float],
               fill) -> None:
    """Draw one of ``SHAPES`` filling the square ``box`` (left, top, right, bottom)."""
    left, top, right, bottom = box
    width, height = right - left, bottom - top
    if shape == "circle":
        draw.ellipse(box, fill=fill)
    elif shape == "square":
        draw.rectangle(box, fill=fill)
    elif shape == "triangle":
        draw.polygon([(left + width / 2, top), (left, bottom), (right, bottom)], fill=fill)
    elif shape == "cross":
        # a plus sign whose arms are 40 % of its extent wide
        arm_x, arm_y = 0.3 * width, 0.3 * height
        draw.rectangle((left + arm_x, top, right - arm_x, bottom), fill=fill)
        draw.rectangle((left, top + arm_y, right, bottom - arm_y), fill=fill)
    else:
        raise ValueError(f"unknown shape '{shape}'; ShapesBench draws {', '.join(SHAPES)}")


def shape_samples(num_images: int, size: int = IMAGE_SIZE, seed: int = 0,
                  specs: list[ShapeSpec] | None = None,
                  phrasings: tuple[str, ...] = TRAIN_PHRASINGS) -> Iterator[tuple]:
    """``(key, image, caption, metadata)`` samples for ``write_wds_shards``: the training set.

    Triples are drawn uniformly from ``specs`` (default: ``train_specs()``), each caption in a
    phrasing drawn uniformly from ``phrasings``; the metadata holds the attributes and the box.
    """
    specs = train_specs() if specs is None else specs
    rng = np.random.default_rng(seed)
    for index in range(num_images):
        spec = specs[int(rng.integers(len(specs)))]
        phrasing = int(rng.integers(len(phrasings)))
        caption = spec.caption(phrasings[phrasing])
        image, box = render(spec, size, rng)
        yield (f"{index:06d}", image, caption,
               {"caption": caption, **spec.as_dict(), "phrasing": phrasing,
                "box": [round(v, 2) for v in box]})


def caption_corpus(phrasings: tuple[str, ...] = TRAIN_PHRASINGS + HELDOUT_PHRASINGS) -> list[str]:
    """Every caption the world can produce in ``phrasings`` (a tokenizer training corpus)."""
    return [spec.caption(p) for spec in all_specs() for p in phrasings]
