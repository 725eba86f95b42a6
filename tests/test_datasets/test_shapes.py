import numpy as np
import pytest

from diffengine.datasets.shapes import (
    ATTRIBUTES,
    BACKGROUND_COLORS,
    FOREGROUND_COLORS,
    HELDOUT_PHRASINGS,
    SHAPES,
    TRAIN_PHRASINGS,
    ShapeSpec,
    all_specs,
    caption_corpus,
    heldout_specs,
    render,
    shape_samples,
    train_specs,
)


def test_the_world_is_as_large_as_promised():
    assert len(FOREGROUND_COLORS) >= 6 and len(SHAPES) >= 4 and len(BACKGROUND_COLORS) >= 3
    assert len(TRAIN_PHRASINGS) >= 4 and len(HELDOUT_PHRASINGS) >= 2
    assert not set(TRAIN_PHRASINGS) & set(HELDOUT_PHRASINGS)
    # a shape never has its background's colour: blue on blue is left out
    assert ShapeSpec("blue", "circle", "blue") not in all_specs()
    assert len(all_specs()) == 6 * 4 * 3 - 4


def test_heldout_triples_are_a_fifth_and_leave_every_value_in_training():
    heldout, train = heldout_specs(), train_specs()
    assert len(heldout) == round(0.2 * len(all_specs()))
    assert not set(heldout) & set(train) and set(heldout) | set(train) == set(all_specs())
    for attribute in ATTRIBUTES:
        assert {getattr(s, attribute) for s in train} == {getattr(s, attribute) for s in all_specs()}
    assert heldout_specs() == heldout  # fixed


def test_heldout_phrasings_use_only_training_words():
    train_words = {w for c in caption_corpus(TRAIN_PHRASINGS) for w in c.replace(",", " ").split()}
    heldout_words = {w for c in caption_corpus(HELDOUT_PHRASINGS) for w in c.replace(",", " ").split()}
    assert heldout_words <= train_words


def test_captions_name_the_attributes_in_english():
    spec = ShapeSpec("orange", "triangle", "blue")
    assert spec.caption(TRAIN_PHRASINGS[0]) == "an orange triangle on a blue background"
    assert spec.caption(TRAIN_PHRASINGS[1]) == "a blue backdrop with an orange triangle"


def test_renders_are_deterministic_and_vary_in_size_and_place():
    spec = ShapeSpec("red", "circle", "white")
    first, box = render(spec, 32, np.random.default_rng(3))
    again, _ = render(spec, 32, np.random.default_rng(3))
    assert np.array_equal(np.asarray(first), np.asarray(again))
    boxes = [render(spec, 32, np.random.default_rng(seed))[1] for seed in range(20)]
    assert len({round(b[2] - b[0], 1) for b in boxes}) > 10  # sizes
    assert len({round(b[0], 1) for b in boxes}) > 10  # places
    for left, top, right, bottom in boxes:  # wholly inside, 20-34 % half extent
        assert 0 <= left and right <= 32 and 0 <= top and bottom <= 32
        assert 0.2 * 32 <= (right - left) / 2 <= 0.34 * 32
    pixels = np.asarray(first)
    assert tuple(pixels[0, 0]) == BACKGROUND_COLORS["white"]
    cx, cy = int((box[0] + box[2]) / 2), int((box[1] + box[3]) / 2)
    assert tuple(pixels[cy, cx]) == FOREGROUND_COLORS["red"]


def test_training_samples_come_from_training_triples_and_phrasings():
    samples = list(shape_samples(200, 32, seed=5))
    heldout = set(heldout_specs())
    for _key, image, caption, meta in samples:
        spec = ShapeSpec(meta["color"], meta["shape"], meta["background"])
        assert spec not in heldout
        assert caption == spec.caption(TRAIN_PHRASINGS[meta["phrasing"]]) == meta["caption"]
        assert image.size == (32, 32)
    assert len({s[2] for s in samples}) > 100
    assert [s[2] for s in shape_samples(20, 32, seed=5)] == [s[2] for s in samples[:20]]


def test_an_unknown_shape_is_an_error():
    with pytest.raises(ValueError, match="unknown shape 'hexagon'"):
        render(ShapeSpec("red", "hexagon", "white"), 32, np.random.default_rng(0))
