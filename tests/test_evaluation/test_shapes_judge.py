import numpy as np
from PIL import Image

from diffengine.datasets.shapes import ShapeSpec, render
from diffengine.evaluation.shapes_benchmark import judge_accuracy
from diffengine.evaluation.shapes_judge import judge_image


def test_judge_reads_heldout_renders_at_least_98_percent_per_attribute():
    accuracy = judge_accuracy(num_images=300)
    assert min(accuracy["color"], accuracy["shape"], accuracy["background"]) >= 0.98, accuracy


def test_judge_reads_each_shape_at_64_px_too():
    rng = np.random.default_rng(0)
    for shape in ("circle", "square", "triangle", "cross"):
        spec = ShapeSpec("green", shape, "black")
        assert judge_image(render(spec, 64, rng)[0]) == spec.as_dict()


def test_an_empty_image_has_no_shape_and_a_foreign_background_is_named():
    blank = Image.new("RGB", (32, 32), (245, 245, 245))
    assert judge_image(blank) == {"color": None, "shape": None, "background": "white"}
    red = Image.new("RGB", (32, 32), (220, 40, 40))
    assert judge_image(red)["background"] == "red"  # no background of the world: counts as wrong


def test_noise_specks_do_not_make_a_shape():
    image, _ = render(ShapeSpec("yellow", "square", "blue"), 32, np.random.default_rng(1))
    pixels = np.asarray(image).copy()
    pixels[1, 1] = pixels[30, 2] = (220, 40, 40)  # isolated red pixels
    assert judge_image(Image.fromarray(pixels)) == {"color": "yellow", "shape": "square",
                                                    "background": "blue"}
