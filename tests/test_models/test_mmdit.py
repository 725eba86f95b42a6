"""SD3 / SD3.5 and FLUX.1 bridges by config alone: family, training, infer/export, full-size counts."""
import json
import re

import numpy as np
import pytest
import torch
from accelerate import init_empty_weights
from diffusers import FluxTransformer2DModel, SD3Transformer2DModel
from PIL import Image
from torch import nn

from diffengine.entry_point import build_parser, main
from diffengine.evaluation.shapes_benchmark import model_generator
from diffengine.models import LaViBridge, LaViBridgePipeline
from diffengine.models.lora import inject_lora, lora_target_names
from diffengine.models.vision import VISION_FAMILIES, find_vision_family
from diffengine.tools.bench.flops import size_flops
from diffengine.tools.bench.models import FLUX_DEV_TRANSFORMER, SD35_MEDIUM_TRANSFORMER
from diffengine.tools.train import run
from tests.helpers import assert_same_images, assert_same_png, demo_cfg_options, fixed_batch, seeded_loss, train_briefly
from tests.test_models.test_latent_training import first_batch
from tests.test_models.test_lora_full_size import lora_parameter_count
from tests.test_tools.test_export import export

LORA = dict(rank=4, dropout=0.0)
SAMPLE = dict(num_inference_steps=2, height=32, width=32, output_type="np", seed=3)
PROMPT = "a red circle on a white background"
FAMILY_NAMES = ("sd3", "flux")


@pytest.fixture(params=FAMILY_NAMES)
def family_bridge(request, tiny_t5):
    base = request.getfixturevalue(f"tiny_{request.param}")
    return request.param, LaViBridge(tiny_t5, base, max_length=16, text_lora=LORA, vision_lora=LORA)


def test_the_family_and_the_adapters_widths_come_from_the_transformer(tiny_sd3, tiny_flux, family_bridge):
    assert find_vision_family(tiny_sd3) is VISION_FAMILIES["sd3"]
    assert find_vision_family(tiny_flux) is VISION_FAMILIES["flux"]
    name, bridge = family_bridge
    assert bridge.vision_family is VISION_FAMILIES[name] and bridge.denoiser is bridge.transformer
    # out: joint_attention_dim; pooled: pooled_projection_dim
    assert bridge.bridge_config["adapter"] == dict(in_dim=32, int_dim=32, out_dim=32, pooled_dim=16)
    assert bridge.bridge_config["prediction_type"] is None
    assert bridge.bridge_config["flow_matching"]["weighting_scheme"] == "logit_normal"


def test_a_flow_bridge_trains_only_its_lora_adapter_and_pooled_head(family_bridge, demo_shards):
    name, bridge = family_bridge
    before_weights = {n: p.detach().clone() for n, p in bridge.named_parameters()}
    # four ShapesBench images of the demo shards, with their captions
    before, after = train_briefly(bridge, batch=first_batch(bridge, demo_shards)["inputs"])
    assert after < before
    changed = {n for n, p in bridge.named_parameters() if not torch.equal(p, before_weights[n])}
    trainable = {n for n, p in bridge.named_parameters() if p.requires_grad}
    # SD3's last block drops its text stream, so the LoRA of its text queries gets no gradient
    # (lora_A still moves: AdamW's weight decay)
    dead = {"transformer.transformer_blocks.1.attn.add_q_proj.lora_B.default.weight"} if name == "sd3" else set()
    assert changed == trainable - dead
    assert {"adapter.pooled_proj.weight", "adapter.pooled_proj.bias"} <= changed
    assert all("lora_" in n for n in changed if not n.startswith("adapter."))
    assert any(n.startswith("transformer.") for n in changed)


def test_infer_export_and_from_bridge_reproduce_the_same_images(family_bridge, tmp_path):
    name, bridge = family_bridge
    with torch.no_grad():
        for p in bridge.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.05)
    bridge_dir = bridge.save_bridge(tmp_path / "bridge")
    manifest = json.loads((bridge_dir / "bridge.json").read_text())
    assert manifest["flow_matching"] == bridge.bridge_config["flow_matching"]
    images = bridge.infer(PROMPT, **SAMPLE)
    assert images.shape == (1, 32, 32, 3)
    # guidance 1 (no classifier-free guidance) is another image: the negative prompt is used
    assert not np.array_equal(bridge.infer(PROMPT, **SAMPLE, guidance_scale=1.0), images)
    with pytest.raises(ValueError, match="does not sample this model's flow-matching schedule: choose flow_euler"):
        bridge.infer(PROMPT, **SAMPLE, scheduler="unipc")
    reloaded = LaViBridge.from_bridge(bridge_dir)
    np.testing.assert_array_equal(reloaded.infer(PROMPT, **SAMPLE), images)
    out = export(str(bridge_dir), str(tmp_path / "pipe"))
    pipeline = LaViBridgePipeline.from_pretrained(out)
    assert pipeline.vision_family is VISION_FAMILIES[name]
    assert sorted(p.name for p in out.glob("*_lora")) == ["text_encoder_lora", "transformer_lora"]
    assert_same_images(pipeline(PROMPT, **SAMPLE).images, images)
    assert main(["infer", str(bridge_dir), PROMPT, "--steps", "2", "--height", "32", "--width", "32",
                 "--seed", "3", "--out", str(tmp_path / "png")]) == 0
    (png,) = (tmp_path / "png").glob("*.png")
    assert_same_png(png, images[0])


def test_the_loss_from_latent_shards_equals_the_loss_from_images(tiny_t5, tiny_flux, demo_shards,
                                                                   flux_latent_shards):
    """prep-latents stores the raw latent distribution; the VAE's shift and scale apply when sampling."""
    bridge = LaViBridge(tiny_t5, tiny_flux, max_length=16, text_lora=LORA, vision_lora=LORA)
    images, latents = first_batch(bridge, demo_shards), first_batch(bridge, flux_latent_shards)
    assert images["data_samples"]["keys"] == latents["data_samples"]["keys"]
    loss = seeded_loss(bridge, images["inputs"])
    assert seeded_loss(bridge, latents["inputs"]) == pytest.approx(loss, rel=1e-5)
    assert seeded_loss(bridge, latents["inputs"], seed=8) != pytest.approx(loss, rel=1e-5)


def test_an_image_size_the_transformer_cannot_patch_and_foreign_latents_are_one_line_errors(family_bridge):
    _, bridge = family_bridge
    # 34 px: 17 x 17 latents, which neither SD3's 2 x 2 patches nor Flux's packing divide
    batch = dict(fixed_batch(size=34))
    with pytest.raises(ValueError, match="whose sides are multiples of 4 px .* got 34 x 34 px: set "
                                         "train_dataloader.resolution to a multiple of 4") as error:
        bridge(batch)
    assert "\n" not in str(error.value)
    # latent shards of a VAE with another channel count (6 parameters: 3-channel latents)
    foreign = {"latent_parameters": torch.zeros(2, 6, 16, 16), "text": batch["text"]}
    with pytest.raises(ValueError, match="hold 3-channel latents and this model's VAE makes 4") as error:
        bridge(foreign)
    assert "\n" not in str(error.value)


# which Linears the class rule must pick, by name, derived here from diffusers' module layout
SD3_LORA = re.compile(r"transformer_blocks\.\d+\.attn2?\.(to_[qkv]|to_out\.0|add_[qkv]_proj|to_add_out)$")
FLUX_LORA = re.compile(r"(single_)?transformer_blocks\.\d+\.attn\.(to_[qkv]|to_out\.0|add_[qkv]_proj|to_add_out)$")
# name: (config, class, parameters, LoRA layers, LoRA parameters at rank 32) as configs/lavi_bridge/README.md states
FULL_SIZE = {
    "sd3": (SD35_MEDIUM_TRANSFORMER, SD3Transformer2DModel, SD3_LORA, 2_243_171_520,
            # 24 joint attentions x 8 less the last layer's to_add_out, 13 image self-attentions x 4
            24 * 8 - 1 + 13 * 4, 23_887_872),
    "flux": (FLUX_DEV_TRANSFORMER, FluxTransformer2DModel, FLUX_LORA, 11_901_408_320,
             # 19 double-stream blocks x 8, 38 single-stream blocks x 3 (to_q, to_k, to_v)
             19 * 8 + 38 * 3, 52_297_728),
}


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_full_size_lora_counts_at_rank_32(name):
    config, model_class, pattern, parameters, layers, lora_parameters = FULL_SIZE[name]
    with init_empty_weights():
        transformer = model_class.from_config(config)
    assert sum(p.numel() for p in transformer.parameters()) == parameters
    family = VISION_FAMILIES[name]
    expected = {n: m for n, m in transformer.named_modules() if pattern.match(n) and isinstance(m, nn.Linear)}
    assert len(expected) == layers
    assert set(lora_target_names(transformer, family.lora_target_classes)) == set(expected)
    count = sum(lora_parameter_count(m, 32) for m in expected.values())
    inject_lora(transformer, family.lora_target_classes, rank=32)
    assert sum(p.numel() for n, p in transformer.named_parameters() if "lora_" in n) == count == lora_parameters


# GFLOP per 1024 px sample, as configs/lavi_bridge/README.md gives them
FLOPS_1024 = {
    "sd35_medium": {"vae_encoder_forward": 4883, "lm_forward_backward": 2012, "adapter_forward_backward": 186,
                    "denoiser_forward_backward": 25438, "step_total": 32518, "step_counted": 32518,
                    "step_total_from_latents": 27636},
    "flux_dev": {"vae_encoder_forward": 4883, "lm_forward_backward": 2012, "adapter_forward_backward": 186,
                 "denoiser_forward_backward": 145295, "step_total": 152376, "step_counted": 152376,
                 "step_total_from_latents": 147493},
}


@pytest.mark.slow  # a 1024 px step of Llama-2-7B and each transformer traced on the meta device
@pytest.mark.parametrize("size", sorted(FLOPS_1024))
def test_training_flops_per_1024_px_sample(size):
    flops = size_flops(size, None, 1024)["per_sample"]
    assert flops["step_counted"] == pytest.approx(flops["step_total"])
    assert {k: round(v / 1e9) for k, v in flops.items()} == FLOPS_1024[size]


@pytest.mark.slow
def test_a_flux_bridge_trains_end_to_end_with_wds_train(tiny_t5, tiny_flux, demo_shards, tmp_path):
    """The real command on image shards: flow matching, sample grids through FluxPipeline, and a
    bridge folder that reloads with its objective."""
    options = [*demo_cfg_options(tiny_t5, tiny_flux, demo_shards, max_iters=4, checkpoint_interval=2),
               "model.adapter=None", "model.flow_matching.weighting_scheme=cosmap",
               # the shards' size; FluxPipeline's default is 128 latent pixels (256 px here)
               "custom_hooks.3.height=32", "custom_hooks.3.width=32"]
    runner = run(build_parser().parse_args(["wds_train", "lavi_bridge_demo", "--work-dir", str(tmp_path),
                                            "--cfg-options", *options]), wds=True)
    assert runner.iter == 4 and runner.model.vision_family is VISION_FAMILIES["flux"]
    losses = runner.message_hub.get_scalar("train/loss").data[0]
    assert len(losses) == 4 and np.isfinite(losses).all()
    assert Image.open(tmp_path / "samples" / "iter_4.png").size == (6 * 32, 32)
    # ShapesBench judges images of its world's size, whatever the pipeline's default
    assert model_generator(runner.model, num_inference_steps=1)(["a red circle"], 0)[0].size == (32, 32)
    bridge = LaViBridge.from_bridge(tmp_path / "bridge" / "iter_4")
    assert bridge.bridge_config["flow_matching"]["weighting_scheme"] == "cosmap"
    torch.testing.assert_close(bridge.adapter.pooled_proj.weight, runner.model.adapter.pooled_proj.weight)
