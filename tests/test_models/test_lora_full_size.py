"""LoRA lands on exactly the paper's module set of full-size SD1.5 UNet and T5-Large (meta device)."""
import re

import pytest
from accelerate import init_empty_weights
from diffusers import UNet2DConditionModel
from torch import nn
from transformers import T5Config, T5EncoderModel

from diffengine.models.language import LANGUAGE_FAMILIES
from diffengine.models.lora import inject_lora, lora_target_names
from diffengine.models.vision import VISION_FAMILIES

RANK = 32
# written from the diffusers module layout, independently of the class walk under test
SD_UNET_LORA = re.compile(
    r"(.*resnets\.\d+\.(conv1|conv2|conv_shortcut|time_emb_proj)"
    r"|.*attn[12]\.(to_q|to_k|to_v|to_out\.0)"
    r"|.*ff\.net\.0\.proj)$")


def lora_parameter_count(layer: nn.Module, rank: int) -> int:
    """A (rank x in[x kernel]) down projection plus an (out x rank) up projection, no biases."""
    if isinstance(layer, nn.Conv2d):
        kh, kw = layer.kernel_size
        return rank * layer.in_channels * kh * kw + layer.out_channels * rank
    return rank * (layer.in_features + layer.out_features)


@pytest.fixture(scope="module")
def sd15_unet():
    with init_empty_weights():
        # the defaults are SD1.x's architecture but for the text width (SD1.x: 768)
        return UNet2DConditionModel(cross_attention_dim=768)


@pytest.fixture(scope="module")
def t5_large_encoder():
    config = T5Config(d_model=1024, d_ff=4096, d_kv=64, num_heads=16, num_layers=24, vocab_size=32128)
    with init_empty_weights():
        return T5EncoderModel(config)


def test_sd15_unet_lora_targets_are_the_papers_set(sd15_unet):
    assert sum(p.numel() for p in sd15_unet.parameters()) == 859_520_964
    targets = set(lora_target_names(sd15_unet, VISION_FAMILIES["sd_unet"].lora_target_classes))
    expected = {n for n, m in sd15_unet.named_modules()
                if SD_UNET_LORA.match(n) and isinstance(m, (nn.Linear, nn.Conv2d))}
    assert targets == expected
    # 16 transformer blocks x (2 attentions x 4 + GEGLU) + 22 resnets x (conv1, conv2, time_emb_proj)
    # + 14 shortcut convs (2 channel-widening down resnets, all 12 up resnets, fed by skips)
    assert len(targets) == 16 * 9 + 22 * 3 + 14


def test_sd15_unet_trainable_lora_parameters(sd15_unet):
    import copy
    unet = copy.deepcopy(sd15_unet)
    expected = sum(lora_parameter_count(m, RANK) for n, m in unet.named_modules()
                   if SD_UNET_LORA.match(n) and isinstance(m, (nn.Linear, nn.Conv2d)))
    inject_lora(unet, VISION_FAMILIES["sd_unet"].lora_target_classes, rank=RANK, dropout=0.1)
    lora = {n: p for n, p in unet.named_parameters() if "lora_" in n}
    assert all(p.requires_grad for p in lora.values())
    assert sum(p.numel() for p in lora.values()) == expected
    conv = unet.down_blocks[0].resnets[0].conv1
    assert conv.lora_A["default"].kernel_size == (3, 3)  # down keeps the conv's kernel
    assert conv.lora_B["default"].kernel_size == (1, 1)  # up is 1x1, as in the paper
    assert conv.scaling["default"] == 1.0
    assert not any("lora_" in n for n in lora_target_names(unet, ["Downsample2D", "Upsample2D"]))


def test_t5_large_lora_targets_and_count(t5_large_encoder):
    family = LANGUAGE_FAMILIES["t5"]
    targets = lora_target_names(t5_large_encoder, family.lora_target_classes)
    assert {t.rsplit(".", 1)[1] for t in targets} == {"q", "k", "v", "o"}
    assert len(targets) == 24 * 4
    inject_lora(t5_large_encoder, family.lora_target_classes, rank=RANK, dropout=0.1)
    trainable = sum(p.numel() for n, p in t5_large_encoder.named_parameters() if "lora_" in n)
    assert trainable == 24 * 4 * RANK * (1024 + 1024)  # every projection is 1024 x 1024


def test_no_target_classes_is_a_clear_error():
    with pytest.raises(ValueError, match="no LoRA target set"):
        inject_lora(nn.Sequential(nn.Linear(2, 2)), ["T5Attention"], rank=4)
