"""``bench flops``: training FLOPs per sample by part, counted with ``FlopCounterMode`` on the meta device.

The parts: VAE encoder forward, LM forward + backward, adapter, denoiser forward + backward.
"""
from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .models import (
    CONFIG_BY_SIZE,
    adapter_dims,
    architecture_configs,
    default_resolution,
    latent_side,
    lora_settings,
    model_kwargs_of,
    packaged_config,
)

if TYPE_CHECKING:
    import torch


def count_training_flops(architecture: dict[str, Any], model_kwargs: dict, resolution: int,
                         batch_size: int = 1) -> dict[str, float]:
    """FLOPs of one training step, per part and in total, counted with ``FlopCounterMode`` on the meta device.

    Matmul, convolution and attention, 2 FLOPs per multiply-add. Each part's forward and backward
    is counted on its own (FlopCounterMode attributes backward FLOPs to the wrong modules), with
    the gradients the real step computes (LoRA weights, and the inputs of parts whose upstream
    trains); ``step_counted`` is the whole step in one pass, to check that the parts add up.
    On real CPU tensors SDPA's default kernel is not counted; on the meta device it is.
    """
    import diffusers
    import torch
    import torch.nn.functional as F
    import transformers
    from diffusers import AutoencoderKL
    from torch.utils.flop_counter import FlopCounterMode

    from diffengine.models.editors.lavi_bridge.text_adapter import LaViBridgeTextAdapter
    from diffengine.models.language import hidden_width, language_family_of, lm_hidden_states
    from diffengine.models.lora import inject_lora
    from diffengine.models.vision import SizeConditioning, TextConditioning, vision_family_of

    text_config = architecture["text"]
    family = language_family_of(text_config.model_type)
    with torch.device("meta"):
        language = (transformers.AutoModel.from_config(text_config) if family.model_class is None
                    else getattr(transformers, family.model_class)(text_config))
        denoiser_class = architecture["denoiser"].get("_class_name", "UNet2DConditionModel")
        denoiser = getattr(diffusers, denoiser_class).from_config(architecture["denoiser"])
        vae = AutoencoderKL.from_config(architecture["vae"])
        hidden = hidden_width(text_config)
        # the family from the denoiser's class and config, as a bridge finds it
        vision = vision_family_of(type(denoiser).__name__, denoiser.config)
        context_dim = denoiser.config[vision.context_dim_key]
        pooled_dim = vision.pooled_dim(denoiser.config)
        adapter = LaViBridgeTextAdapter(**{"pooled_dim": pooled_dim, **adapter_dims(hidden, context_dim, model_kwargs)})
    for model in (language, denoiser, vae):
        model.requires_grad_(False)
    for model, classes, side in ((language, family.lora_target_classes, "text_lora"),
                                 (denoiser, vision.lora_target_classes, "vision_lora")):
        lora = lora_settings(model_kwargs, side)
        if lora["rank"]:
            inject_lora(model, classes, lora["rank"], lora["alpha"], lora["dropout"])
    for model in (language, denoiser, vae, adapter):
        model.train()

    meta = {"device": "meta"}
    length = model_kwargs.get("max_length", 77)
    ids = torch.zeros(batch_size, length, dtype=torch.long, **meta)
    mask = torch.ones(batch_size, length, dtype=torch.long, **meta)
    pixels = torch.empty(batch_size, 3, resolution, resolution, **meta)
    side = latent_side(resolution, vae.config)
    latents = torch.empty(batch_size, vae.config.latent_channels, side, side, **meta)
    timesteps = torch.zeros(batch_size, **meta)
    # SDXL's time ids: an image of the trained size, uncropped (the other families ignore them)
    size_ids = torch.zeros(batch_size, 2, dtype=torch.long, **meta)
    sizes = SizeConditioning(size_ids, size_ids, size_ids)
    lm_args = (model_kwargs.get("hidden_layer", -1), model_kwargs.get("text_attention_mask", False))

    def lm() -> torch.Tensor:
        return lm_hidden_states(language, ids, mask, *lm_args)

    def adapt(hidden_states: torch.Tensor) -> TextConditioning:
        return adapter.conditioning(hidden_states, mask, hidden_states.dtype)

    def denoise(text: TextConditioning) -> torch.Tensor:
        prediction = vision.predict(denoiser, latents, timesteps, text, sizes)
        return F.mse_loss(prediction.float(), latents.float())

    def adapter_loss() -> torch.Tensor:
        text = adapt(upstream((batch_size, length, hidden)))
        return text.context.sum() + (0 if text.pooled is None else text.pooled.sum())

    def denoiser_loss() -> torch.Tensor:
        pooled = None if pooled_dim is None else upstream((batch_size, pooled_dim))
        return denoise(TextConditioning(upstream((batch_size, length, context_dim)), mask, pooled))

    def encode() -> None:
        with torch.no_grad():
            vae.encode(pixels).latent_dist.sample()

    def step() -> None:
        encode()
        denoise(adapt(lm())).backward()

    def counted(function: Callable[[], Any]) -> float:
        with FlopCounterMode(display=False) as counter:
            function()
        return counter.get_total_flops() / batch_size

    def upstream(shape: tuple[int, ...]) -> torch.Tensor:  # an input whose gradient the step computes
        return torch.empty(*shape, requires_grad=True, **meta)

    parts = {
        "vae_encoder_forward": counted(encode),
        "lm_forward_backward": counted(lambda: lm().sum().backward()),
        "adapter_forward_backward": counted(lambda: adapter_loss().backward()),
        "denoiser_forward_backward": counted(lambda: denoiser_loss().backward()),
    }
    return {**parts, "step_total": sum(parts.values()), "step_counted": counted(step),
            "step_total_from_latents": sum(parts.values()) - parts["vae_encoder_forward"]}


# issue 12's table for T5-Large + SD1.5 UNet at 512 px, GFLOP per sample
ISSUE_FLOPS_GFLOP = {"vae_encoder_forward": 1117, "lm_forward_backward": 97, "adapter_forward_backward": 10,
                     "denoiser_forward_backward": 1836, "step_total": 3060}


def run_flops(args: argparse.Namespace) -> dict[str, Any]:
    """Count the training FLOPs per sample of a size and print them by part."""
    resolution = default_resolution(args.size, args.resolution)
    flops = size_flops(args.size, args.data_dir, resolution)
    print(f"\ndiffengine bench flops: {args.size} size at {resolution} px, per sample "
          "(FlopCounterMode on the meta device; matmul, conv, attention; 2 FLOPs per multiply-add)")
    compare = args.size == "full" and resolution == 512
    print("| part | GFLOP | share |" + (" issue 12 |" if compare else "")
          + "\n|---|---|---|" + ("---|" if compare else ""))
    for name, value in flops["per_sample"].items():
        if name in ("step_counted", "step_total_from_latents"):
            continue
        issue = f" {ISSUE_FLOPS_GFLOP[name]} |" if compare else ""
        print(f"| {name} | {_gflop(value)} | {100 * value / flops['per_sample']['step_total']:.1f} % |{issue}")
    per_sample = flops["per_sample"]
    print(f"whole step counted in one pass: {_gflop(per_sample['step_counted'])} GFLOP "
          f"(parts add up to {_gflop(per_sample['step_total'])}); from precomputed latents: "
          f"{_gflop(per_sample['step_total_from_latents'])}")
    if compare:
        flops["issue_12_gflop"] = ISSUE_FLOPS_GFLOP
    return {"flops": flops}


def _gflop(flops: float) -> str:
    """FLOPs as GFLOP for the table: 4 significant digits, whole numbers from 1000 on."""
    gflop = flops / 1e9
    return f"{gflop:.4g}" if gflop < 1000 else f"{gflop:,.0f}"


def size_flops(size: str, data_dir: str | Path | None, resolution: int, cfg=None) -> dict[str, Any]:
    """The training FLOPs per sample of a bench size with its packaged config's settings, or those of
    ``cfg`` (that config with options over it: a LoRA rank or max_length changes the count), and how
    counted."""
    cfg = cfg if cfg is not None else packaged_config(size)
    per_sample = count_training_flops(architecture_configs(size, data_dir), model_kwargs_of(cfg), resolution)
    return {"size": size, "config": CONFIG_BY_SIZE[size], "resolution": resolution, "per_sample": per_sample,
            "counted_with": "torch.utils.flop_counter.FlopCounterMode on the meta device, batch 1"}
