import torch

from diffengine.models import DiffusionDataPreprocessor


def test_uint8_pixels_become_floats_in_minus_one_to_one():
    pixels = torch.tensor([0, 255, 51], dtype=torch.uint8).view(1, 3, 1, 1)
    out = DiffusionDataPreprocessor()({"inputs": {"pixel_values": pixels, "text": ["a"]}})
    scaled = out["inputs"]["pixel_values"]
    assert scaled.dtype == torch.float32
    torch.testing.assert_close(scaled.flatten(), torch.tensor([-1.0, 1.0, 51 / 127.5 - 1]))
    assert out["inputs"]["text"] == ["a"]


def test_float_pixels_pass_unchanged():
    pixels = torch.rand(2, 3, 4, 4) * 2 - 1
    out = DiffusionDataPreprocessor()({"inputs": {"pixel_values": pixels.clone()}})
    assert torch.equal(out["inputs"]["pixel_values"], pixels)


def test_the_model_trains_on_uint8_as_on_the_same_floats(tiny_bridge):
    pixels = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    losses = []
    for batch in (pixels, pixels.float() / 127.5 - 1):
        data = tiny_bridge.data_preprocessor({"inputs": {"pixel_values": batch, "text": ["a red circle", ""]}})
        torch.manual_seed(0)
        losses.append(tiny_bridge(**data)["loss"])
    torch.testing.assert_close(losses[0], losses[1])
