"""SDXL bridges by config alone: family, pooled head, time ids from the loader, infer/export, full size."""
import io
import json
import random

import numpy as np
import pytest
import torch
from accelerate import init_empty_weights
from diffusers import UNet2DConditionModel
from PIL import ExifTags, Image
from torch import nn

from diffengine.datasets import ImageTransform
from diffengine.entry_point import build_parser, main
from diffengine.models import LaViBridge, LaViBridgePipeline
from diffengine.models.editors.lavi_bridge.text_adapter import LaViBridgeTextAdapter
from diffengine.models.lora import inject_lora, lora_target_names
from diffengine.models.vision import VISION_FAMILIES, find_vision_family, vision_family_of
from diffengine.tools.bench.flops import size_flops
from diffengine.tools.bench.models import SDXL_BASE_UNET
from diffengine.tools.train import run
from tests.helpers import (
    assert_same_images,
    assert_same_png,
    demo_cfg_options,
    fixed_batch,
    image_bytes,
    load,
    sample,
    train_briefly,
    write_tar,
)
from tests.test_models.test_lora_full_size import SD_UNET_LORA, lora_parameter_count
from tests.test_tools.test_export import export

LORA = dict(rank=4, dropout=0.0)
SAMPLE = dict(num_inference_steps=2, height=32, width=32, output_type="np", seed=3)
PROMPT = "a red circle on a white background"
SDXL_LORA_RANK_32 = 82_749_440  # the figure configs/lavi_bridge/README.md states


@pytest.fixture
def sdxl_bridge(tiny_t5, tiny_sdxl):
    return LaViBridge(tiny_t5, tiny_sdxl, max_length=16, text_lora=LORA, vision_lora=LORA)


def test_the_family_is_chosen_from_the_unet_config(tiny_sd, tiny_sdxl, sdxl_bridge):
    assert find_vision_family(tiny_sdxl) is VISION_FAMILIES["sdxl"]
    assert find_vision_family(tiny_sd) is VISION_FAMILIES["sd_unet"]  # same class, no text_time
    assert sdxl_bridge.vision_family is VISION_FAMILIES["sdxl"]
    # the pooled width is what the added embedding takes besides the six 8-wide time-id embeddings
    assert sdxl_bridge.bridge_config["adapter"] == dict(in_dim=32, int_dim=32, out_dim=32, pooled_dim=16)
    with pytest.raises(ValueError, match="addition_embed_type='image' has no LaVi-Bridge family"):
        vision_family_of("UNet2DConditionModel", {"addition_embed_type": "image"})


def test_sdxl_trains_only_the_bridge_and_its_pooled_head(sdxl_bridge):
    before_weights = {n: p.detach().clone() for n, p in sdxl_bridge.named_parameters()}
    before, after = train_briefly(sdxl_bridge)
    assert after < before
    changed = {n for n, p in sdxl_bridge.named_parameters() if not torch.equal(p, before_weights[n])}
    assert changed == {n for n, p in sdxl_bridge.named_parameters() if p.requires_grad}
    assert {"adapter.pooled_proj.weight", "adapter.pooled_proj.bias"} <= changed
    assert all("lora_" in n for n in changed if not n.startswith("adapter."))


def test_time_ids_are_the_batchs_original_size_crop_and_target_size(sdxl_bridge):
    seen = []
    sdxl_bridge.unet.register_forward_pre_hook(
        lambda _m, _args, kwargs: seen.append(kwargs["added_cond_kwargs"]), with_kwargs=True)
    batch = fixed_batch()
    sdxl_bridge(batch)
    (added,) = seen
    # 32 px images: 16 x 16 latents x VAE scale 2
    expected = torch.cat([batch["original_size"], batch["crop_top_left"], torch.tensor([[32, 32]] * 2)], 1)
    assert torch.equal(added["time_ids"], expected.float())
    assert added["text_embeds"].shape == (2, 16)
    with pytest.raises(ValueError, match="run prep-latents again, or train from image shards"):
        sdxl_bridge({k: batch[k] for k in ("pixel_values", "text")})  # a batch without sizes


def test_infer_export_and_from_bridge_keep_the_pooled_head(sdxl_bridge, tmp_path):
    with torch.no_grad():
        for p in sdxl_bridge.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.05)
    bridge_dir = sdxl_bridge.save_bridge(tmp_path / "bridge")
    assert json.loads((bridge_dir / "bridge.json").read_text())["adapter"]["pooled_dim"] == 16
    reloaded = LaViBridge.from_bridge(bridge_dir)
    assert torch.equal(reloaded.adapter.pooled_proj.weight, sdxl_bridge.adapter.pooled_proj.weight)
    images = sdxl_bridge.infer(PROMPT, **SAMPLE)
    assert images.shape == (1, 32, 32, 3)
    out = export(str(bridge_dir), str(tmp_path / "pipe"))
    pipeline = LaViBridgePipeline.from_pretrained(out)
    assert pipeline.vision_family is VISION_FAMILIES["sdxl"] and pipeline.adapter.config.pooled_dim == 16
    assert pipeline.encode_prompt([PROMPT]).pooled.shape == (1, 16)
    assert_same_images(pipeline(PROMPT, **SAMPLE).images, images)
    # diffengine infer writes the same image
    assert main(["infer", str(bridge_dir), PROMPT, "--steps", "2", "--height", "32", "--width", "32",
                 "--seed", "3", "--out", str(tmp_path / "png")]) == 0
    (png,) = (tmp_path / "png").glob("*.png")
    assert_same_png(png, images[0])


def test_sdxl_trains_from_latent_shards_and_refuses_ones_without_sizes(sdxl_bridge, latent_shards):
    batch = sdxl_bridge.data_preprocessor(next(iter(load(latent_shards, batch_size=2, resolution=32))))["inputs"]
    assert "latent_parameters" in batch and batch["original_size"].shape == (2, 2)
    assert torch.isfinite(sdxl_bridge(batch)["loss"])
    # latent shards of an earlier prep-latents recorded no sizes
    old = {k: v for k, v in batch.items() if k not in ("original_size", "crop_top_left")}
    with pytest.raises(ValueError, match="^SDXL needs each image's original size and crop") as error:
        sdxl_bridge(old)
    assert "\n" not in str(error.value)


def rotated_jpeg(size: tuple[int, int]) -> bytes:
    """A JPEG stored ``size`` (width, height) whose EXIF orientation 6 turns it a quarter."""
    image = Image.open(io.BytesIO(image_bytes(size=size)))
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", exif=exif)
    return buffer.getvalue()


def test_loader_records_original_size_and_crop(tmp_path):
    # 20 x 14 px images resized to 8 px high: 11 px wide, so a center crop starts 1 px in (3 spare)
    write_tar(tmp_path / "s.tar", [
        sample("img2dataset", meta={"original_width": 640, "original_height": 448, "width": 20}),
        sample("decoded", image=image_bytes(size=(20, 14))),
        # stored 14 x 20, shown (and trained) 20 x 14 once EXIF turns it upright
        sample("rotated", image=rotated_jpeg((14, 20)))])
    batch = next(iter(load(str(tmp_path / "s.tar"), batch_size=3, random_flip=False)))
    assert batch["inputs"]["original_size"].tolist() == [[448, 640], [14, 20], [14, 20]]  # (height, width)
    assert batch["inputs"]["crop_top_left"].tolist() == [[0, 1], [0, 1], [0, 1]]
    assert batch["inputs"]["original_size"].dtype == torch.long


@pytest.mark.parametrize("center_crop", [True, False])
def test_crop_offsets_describe_the_pixels_as_trained_flip_included(center_crop):
    # each column holds its index: the offset must find the output's pixels in the resized image,
    # mirrored when flipped (as diffusers' SDXL example, which flips and then crops, records them);
    # 63 px wide, so 47 spare columns and a center crop that is 23 px from the left, 24 from the right
    columns = np.tile(np.arange(63, dtype=np.uint8), (16, 1))
    image = Image.fromarray(np.stack([columns] * 3, axis=-1))
    transform = ImageTransform(16, center_crop=center_crop, random_flip=True)
    flips = set()
    for seed in range(12):
        draws = random.Random(seed)
        left = 23 if center_crop else draws.randint(0, 47)
        if not center_crop:
            draws.randint(0, 0)  # top: no vertical slack
        flipped = draws.random() < 0.5
        pixels, (top, crop_left, crop_right) = transform.crop_and_flip(image, random.Random(seed))
        assert (top, crop_left, crop_right) == ((0, 47 - left, left) if flipped else (0, left, 47 - left))
        seen = columns[:, ::-1] if flipped else columns
        assert np.array_equal(pixels[0].numpy(), seen[:, crop_left:crop_left + 16])
        flips.add(flipped)
    assert flips == {True, False}


def test_sdxl_base_lora_count_at_rank_32():
    with init_empty_weights():
        unet = UNet2DConditionModel(**SDXL_BASE_UNET)
    assert sum(p.numel() for p in unet.parameters()) == 2_567_463_684  # SDXL base's 2.6 B
    family = VISION_FAMILIES["sdxl"]
    expected = {n: m for n, m in unet.named_modules()
                if SD_UNET_LORA.match(n) and isinstance(m, (nn.Linear, nn.Conv2d))}
    assert set(lora_target_names(unet, family.lora_target_classes)) == set(expected)
    # 70 transformer blocks x (2 attentions x 4 + GEGLU) + 17 resnets x 3 + 11 shortcut convs
    assert len(expected) == 70 * 9 + 17 * 3 + 11
    count = sum(lora_parameter_count(m, 32) for m in expected.values())
    inject_lora(unet, family.lora_target_classes, rank=32)
    assert sum(p.numel() for n, p in unet.named_parameters() if "lora_" in n) == count == SDXL_LORA_RANK_32



def test_sdxl_config_adapter_count():
    with init_empty_weights():
        adapter = LaViBridgeTextAdapter(1024, 1536, 2048, pooled_dim=1280)
    head = sum(p.numel() for p in adapter.pooled_proj.parameters())
    assert (sum(p.numel() for p in adapter.parameters()), head) == (48_789_248, 2048 * 1280 + 1280)


@pytest.mark.slow  # ~30 s: a 1024 px SDXL step traced on the meta device
def test_training_flops_per_1024_px_sample():
    # what `diffengine bench flops --size sdxl` counts: lavi_bridge_t5_sdxl_laion's settings at 1024 px
    flops = size_flops("sdxl", None, 1024)["per_sample"]
    assert flops["step_counted"] == pytest.approx(flops["step_total"])  # the parts add up to the step
    # the figures configs/lavi_bridge/README.md gives, in GFLOP
    assert {k: round(v / 1e9) for k, v in flops.items()} == {
        "vae_encoder_forward": 4879, "lm_forward_backward": 97, "adapter_forward_backward": 21,
        "denoiser_forward_backward": 14961, "step_total": 19958, "step_counted": 19958,
        "step_total_from_latents": 15079}


@pytest.mark.slow
def test_an_sdxl_bridge_trains_end_to_end_with_wds_train(tiny_t5, tiny_sdxl, demo_shards, tmp_path):
    """The real command on image shards: loader sizes -> time ids, hooks sampling with SDXL's
    pipeline, checkpoints and a bridge folder that reloads with its pooled head."""
    options = [*demo_cfg_options(tiny_t5, tiny_sdxl, demo_shards, max_iters=4, checkpoint_interval=2),
               "model.adapter=None"]
    runner = run(build_parser().parse_args(["wds_train", "lavi_bridge_demo", "--work-dir", str(tmp_path),
                                            "--cfg-options", *options]), wds=True)
    assert runner.iter == 4 and runner.model.vision_family is VISION_FAMILIES["sdxl"]
    losses = runner.message_hub.get_scalar("train/loss").data[0]
    assert len(losses) == 4 and np.isfinite(losses).all()
    assert (tmp_path / "samples" / "iter_4.png").is_file()
    bridge = LaViBridge.from_bridge(tmp_path / "bridge" / "iter_4")
    assert bridge.adapter.config.pooled_dim == 16
    torch.testing.assert_close(bridge.adapter.pooled_proj.weight, runner.model.adapter.pooled_proj.weight)
