"""The models each size of ``diffengine bench`` trains, and the config settings they train with.

tiny: the demo's models (built once, as ``diffengine demo`` does); full: T5-Large + SD1.5 UNet +
SD VAE with random weights; FLOP counts only: sdxl (T5-Large + the SDXL base UNet + SD VAE),
sd35_medium and flux_dev (Llama-2-7B + that transformer + their 16-channel VAE). The denoiser's
config is ``denoiser`` whatever its class (``_class_name``, UNet2DConditionModel when absent).
Every mode reads its sequence length, LoRA, adapter and optimizer settings from the packaged
config of its size.
"""
from __future__ import annotations

import contextlib
import io
import tempfile
from pathlib import Path
from typing import Any

# the configs whose model settings (sequence length, LoRA, learning rates) each size trains with
CONFIG_BY_SIZE = {"tiny": "lavi_bridge_demo", "full": "lavi_bridge_v15_laion", "sdxl": "lavi_bridge_t5_sdxl_laion",
                  "sd35_medium": "lavi_bridge_llama2_sd35_medium_laion",
                  "flux_dev": "lavi_bridge_llama2_flux_dev_laion"}
# the sizes whose models the gpu mode builds with weights (the others are counted on the meta device only)
WEIGHTED_SIZES = ("full", "tiny")
DEFAULT_RESOLUTION = {"tiny": 32, "full": 512, "sdxl": 1024, "sd35_medium": 1024, "flux_dev": 1024}
# meta-llama/Llama-2-7b-hf's config.json: the values that differ from LlamaConfig's defaults
LLAMA2_7B = dict(vocab_size=32000, rms_norm_eps=1e-5)
# stabilityai/stable-diffusion-3.5-medium's transformer/config.json (2.24 B parameters)
SD35_MEDIUM_TRANSFORMER = dict(
    _class_name="SD3Transformer2DModel", attention_head_dim=64, caption_projection_dim=1536, in_channels=16,
    joint_attention_dim=4096, num_attention_heads=24, num_layers=24, out_channels=16, patch_size=2,
    pooled_projection_dim=2048, pos_embed_max_size=384, qk_norm="rms_norm", sample_size=128,
    dual_attention_layers=tuple(range(13)))
# black-forest-labs/FLUX.1-dev's transformer/config.json (11.9 B parameters)
FLUX_DEV_TRANSFORMER = dict(
    _class_name="FluxTransformer2DModel", attention_head_dim=128, guidance_embeds=True, in_channels=64,
    joint_attention_dim=4096, num_attention_heads=24, num_layers=19, num_single_layers=38, patch_size=1,
    pooled_projection_dim=768, axes_dims_rope=(16, 56, 56))
# the 16-channel VAE SD3 and FLUX.1 share (their scaling and shift factors differ, not their FLOPs)
SD3_VAE = dict(block_out_channels=(128, 256, 512, 512), latent_channels=16, layers_per_block=2,
               down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
               sample_size=1024, use_quant_conv=False, use_post_quant_conv=False)
# stabilityai/stable-diffusion-xl-base-1.0's unet/config.json: the values that differ from the defaults
SDXL_BASE_UNET = dict(
    addition_embed_type="text_time", addition_embed_type_num_heads=64, addition_time_embed_dim=256,
    attention_head_dim=[5, 10, 20], block_out_channels=[320, 640, 1280], cross_attention_dim=2048,
    down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    projection_class_embeddings_input_dim=2816, sample_size=128, transformer_layers_per_block=[1, 2, 10],
    up_block_types=["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"], use_linear_projection=True)


def default_resolution(size: str, resolution: int | None) -> int:
    """``--resolution``, or the size's own: 32 px tiny, 512 px full, 1024 px sdxl."""
    return resolution or DEFAULT_RESOLUTION[size]


def full_size_configs() -> dict[str, Any]:
    """Configs of the full-size architectures: T5-Large, the SD1.5 UNet, the SD VAE and scheduler."""
    from transformers import T5Config

    return {
        "text": T5Config(d_model=1024, d_ff=4096, d_kv=64, num_heads=16, num_layers=24, vocab_size=32128),
        "denoiser": {"cross_attention_dim": 768},  # every other UNet2DConditionModel default is SD1.5's
        "vae": {"block_out_channels": (128, 256, 512, 512), "latent_channels": 4, "layers_per_block": 2,
                "down_block_types": ("DownEncoderBlock2D",) * 4, "up_block_types": ("UpDecoderBlock2D",) * 4,
                "sample_size": 512},
        "scheduler": {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
                      "num_train_timesteps": 1000},
    }


def make_full_size_assets(root: Path) -> tuple[Path, Path]:
    """Random-weight T5-Large encoder (with a tiny tokenizer) and an SD1.5-shaped base-model folder."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import T5EncoderModel

    from ..demo_assets import make_tiny_t5

    configs = full_size_configs()
    t5_dir = make_tiny_t5(root / "t5")  # for its tokenizer; the model is replaced below
    T5EncoderModel(configs["text"]).save_pretrained(t5_dir)
    sd_dir = root / "sd"
    UNet2DConditionModel(**configs["denoiser"]).save_pretrained(sd_dir / "unet")
    AutoencoderKL(**configs["vae"]).save_pretrained(sd_dir / "vae")
    DDPMScheduler(**configs["scheduler"]).save_pretrained(sd_dir / "scheduler")
    return t5_dir, sd_dir


def demo_models(data_dir: str | Path) -> tuple[Path, Path, Path]:
    """The demo's assets (built once, as ``diffengine demo`` does): T5 folder, stage-1 folder, shards."""
    from ..demo_assets import demo_folders, make_demo_assets

    with contextlib.redirect_stderr(io.StringIO()):  # its progress bar
        return demo_folders(make_demo_assets(data_dir, progress=False).resolve())


def packaged_config(size: str, *options: str):
    """The packaged config a size trains with, with ``--cfg-options``-style overrides applied and
    checked as ``diffengine train`` checks them (option names, types, values; not model folders)."""
    from ..train import build_config, check_resolved_config, train_arguments

    with tempfile.TemporaryDirectory() as work_dir:
        cfg = build_config(train_arguments(CONFIG_BY_SIZE[size], "--work-dir", work_dir,
                                           *(["--cfg-options", *options] if options else [])), wds=True)
    if options:
        check_resolved_config(cfg)
    return cfg


def model_kwargs_of(cfg) -> dict[str, Any]:
    """A config's model settings: ``cfg.model`` without its ``type``."""
    return {key: value for key, value in cfg.model.items() if key != "type"}


def optimizer_settings_of(cfg) -> tuple[dict, dict[str, float], dict | None]:
    """(AdamW keyword arguments, learning rate by group, ``clip_grad`` or None: no clipping) of a
    config's optim_wrapper."""
    wrapper = cfg.optim_wrapper
    optimizer = {key: value for key, value in wrapper.optimizer.items() if key != "type"}
    group_lr = dict(wrapper.get("paramwise_cfg", {}).get("group_lr", {}))
    return optimizer, group_lr, dict(wrapper.get("clip_grad") or {}) or None


def architecture_configs(size: str, data_dir: str | Path) -> dict[str, Any]:
    """The configs of a size's text encoder, UNet, VAE and scheduler (tiny: read from the demo's folders)."""
    if size == "full":
        return full_size_configs()
    if size == "sdxl":
        return dict(full_size_configs(), denoiser=SDXL_BASE_UNET)
    if size in ("sd35_medium", "flux_dev"):
        from transformers import LlamaConfig

        transformer = SD35_MEDIUM_TRANSFORMER if size == "sd35_medium" else FLUX_DEV_TRANSFORMER
        return dict(full_size_configs(), text=LlamaConfig(**LLAMA2_7B), denoiser=transformer, vae=SD3_VAE)
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import AutoConfig

    t5_dir, sd_dir, _ = demo_models(data_dir)
    return {"text": AutoConfig.from_pretrained(t5_dir),
            "denoiser": dict(UNet2DConditionModel.load_config(sd_dir, subfolder="unet")),
            "vae": dict(AutoencoderKL.load_config(sd_dir, subfolder="vae")),
            "scheduler": dict(DDPMScheduler.load_config(sd_dir, subfolder="scheduler"))}


def lora_settings(model_kwargs: dict, side: str) -> dict[str, Any]:
    """A side's LoRA (``text_lora`` or ``vision_lora``) as ``LaViBridge`` resolves the config's."""
    from diffengine.models.editors.lavi_bridge.lavi_bridge import lora_settings as resolved

    return resolved(model_kwargs.get(side), side)


def adapter_dims(hidden: int, context: int, model_kwargs: dict) -> dict[str, int]:
    """The adapter's dims for an LM and denoiser of these widths, as ``LaViBridge`` sets them from the config."""
    from diffengine.models.editors.lavi_bridge.text_adapter import adapter_dims as resolved

    return resolved(hidden, context, model_kwargs.get("adapter"))


def latent_side(resolution: int, vae_config) -> int:
    """The side of the latents a VAE encodes a ``resolution`` px image into."""
    from diffengine.models.vision import vae_scale_factor

    return resolution // vae_scale_factor(vae_config)
