"""Any vision family bridges by config alone: tiny PixArt and SD2-style UNets train and sample."""
import re
from unittest import mock

import numpy as np
import pytest
import torch
from accelerate import init_empty_weights
from diffusers import PixArtTransformer2DModel
from torch import nn

from diffengine.models import LaViBridge, LaViBridgePipeline
from diffengine.models.lora import inject_lora
from diffengine.models.vision import VISION_FAMILIES, TextConditioning, find_vision_family, vision_family_of
from diffengine.tools.demo_assets import make_tiny_sd
from tests.helpers import train_briefly

RANK = 32
LORA = dict(rank=4, dropout=0.0)
SAMPLE = dict(num_inference_steps=2, height=32, width=32, output_type="np")
# written from the diffusers module layout, independently of the class walk under test: PixArt's
# feed-forwards are GELU, not GEGLU, so only the attention projections match the authors' set
PIXART_LORA = re.compile(r"transformer_blocks\.\d+\.attn[12]\.(to_q|to_k|to_v|to_out\.0)$")


@pytest.fixture
def pixart_bridge(tiny_t5, tiny_pixart):
    return LaViBridge(tiny_t5, tiny_pixart, max_length=16, text_attention_mask=True,
                      text_lora=LORA, vision_lora=LORA)


def test_pixart_trains_and_infers(pixart_bridge):
    transformer = pixart_bridge.transformer
    assert pixart_bridge.denoiser is transformer and type(transformer).__name__ == "PixArtTransformer2DModel"
    lora = {n.removesuffix(".lora_A.default.weight") for n, _ in transformer.named_parameters()
            if n.endswith("lora_A.default.weight")}
    assert lora == {n for n, _ in transformer.named_modules() if PIXART_LORA.match(n)}
    before, after = train_briefly(pixart_bridge)
    assert after < before
    images = pixart_bridge.infer(["a red circle", "a blue square"], seed=0, **SAMPLE)
    assert images.shape == (2, 32, 32, 3)


@torch.no_grad()
def test_pixart_gets_the_text_mask_and_predicts_epsilon_half(pixart_bridge):
    model = pixart_bridge.eval()
    text = model.encode_text(["a red circle", "a blue square"])
    context, mask = text.context, text.mask
    assert (mask == 0).any() and text.pooled is None
    latents, timesteps = torch.randn(2, 4, 16, 16), torch.tensor([10, 500])
    prediction = model.vision_family.predict(model.transformer, latents, timesteps, text)
    # learned sigma: the transformer outputs epsilon and variance; the loss and sampler use epsilon
    assert model.transformer.config.out_channels == 8 and prediction.shape == latents.shape
    noisy_padding = torch.where(mask[..., None] == 1, context, torch.randn_like(context))
    torch.testing.assert_close(
        model.vision_family.predict(model.transformer, latents, timesteps,
                                    TextConditioning(noisy_padding, mask)),
        prediction)


def test_pixart_bridge_and_export_round_trip(pixart_bridge, tmp_path):
    with torch.no_grad():
        for p in pixart_bridge.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.05)
    pixart_bridge.save_bridge(tmp_path / "bridge")
    assert LaViBridge.from_bridge(tmp_path / "bridge").state_dict().keys() == \
        pixart_bridge.state_dict().keys()
    pipeline = LaViBridgePipeline.from_model(pixart_bridge, "ddim")
    pipeline.save_pretrained(tmp_path / "export")
    assert (tmp_path / "export" / "transformer_lora" / "adapter_model.safetensors").is_file()
    loaded = LaViBridgePipeline.from_pretrained(tmp_path / "export")
    assert loaded.unet is None and loaded.config.use_attention_mask
    pixart_bridge.eval()
    np.testing.assert_array_equal(loaded("a red circle", seed=1, **SAMPLE).images,
                                  pipeline("a red circle", seed=1, **SAMPLE).images)


def test_sd2_style_unet_trains_with_v_prediction_and_infers(tiny_t5, tmp_path):
    sd2 = make_tiny_sd(tmp_path / "sd2", cross_attention_dim=1024, prediction_type="v_prediction")
    model = LaViBridge(tiny_t5, str(sd2), max_length=16, text_lora=LORA, vision_lora=LORA)
    assert dict(model.adapter.config)["out_dim"] == 1024
    scheduler = model.noise_scheduler
    with mock.patch.object(scheduler, "get_velocity", wraps=scheduler.get_velocity) as velocity:
        before, after = train_briefly(model, steps=10)
    assert velocity.call_count == 12  # every loss: 10 updates and the 2 seeded evaluations
    assert after < before
    pipeline = LaViBridgePipeline.from_model(model)
    assert pipeline.scheduler.config.prediction_type == "v_prediction"
    assert model.infer("a red circle", seed=0, **SAMPLE).shape == (1, 32, 32, 3)


def test_families_are_found_by_subfolder_and_unknown_ones_are_clear_errors(tiny_sd, tiny_pixart,
                                                                           tmp_path):
    assert find_vision_family(tiny_sd) is VISION_FAMILIES["sd_unet"]
    assert find_vision_family(tiny_pixart) is VISION_FAMILIES["pixart"]
    # PixArt-alpha's hub checkpoints name the generic class
    assert vision_family_of("Transformer2DModel", {}) is VISION_FAMILIES["pixart"]
    with pytest.raises(ValueError, match="holds no denoiser config in any of unet/, transformer/"):
        find_vision_family(str(tmp_path))
    with pytest.raises(ValueError, match="'HunyuanDiT2DModel' has no LaVi-Bridge family"):
        vision_family_of("HunyuanDiT2DModel", {})


def test_pixart_xl_2_512_lora_targets_and_count():
    # PixArt-XL-2-512x512's transformer/config.json (its other values are the class defaults)
    with init_empty_weights():
        transformer = PixArtTransformer2DModel(sample_size=64, caption_channels=4096)
    assert sum(p.numel() for p in transformer.parameters()) == 610_856_096  # "0.6B" in the PixArt-alpha paper
    expected = {n: m for n, m in transformer.named_modules()
                if PIXART_LORA.match(n) and isinstance(m, nn.Linear)}
    assert len(expected) == 28 * 2 * 4
    expected_count = sum(RANK * (m.in_features + m.out_features) for m in expected.values())
    inject_lora(transformer, VISION_FAMILIES["pixart"].lora_target_classes, rank=RANK)
    lora = {n: p for n, p in transformer.named_parameters() if "lora_" in n}
    assert {n.rsplit(".lora_", 1)[0] for n in lora} == set(expected)
    assert sum(p.numel() for p in lora.values()) == expected_count == 28 * 2 * 4 * RANK * 2 * 1152


def test_the_cli_scheduler_names_are_the_samplers_inference_offers():
    from diffengine.constants import INFERENCE_SCHEDULER_NAMES
    from diffengine.models.vision.samplers import INFERENCE_SCHEDULERS

    assert tuple(INFERENCE_SCHEDULERS) == INFERENCE_SCHEDULER_NAMES
