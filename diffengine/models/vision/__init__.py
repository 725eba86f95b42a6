"""Vision side of a bridge: one entry per generative vision model family."""
from .families import (
    VISION_FAMILIES,
    FluxFamily,
    PixArtFamily,
    SD3Family,
    SDXLFamily,
    SizeConditioning,
    TextConditioning,
    UNetFamily,
    VisionFamily,
    check_image_sides,
    find_vision_family,
    image_side_multiple,
    load_diffusers_config,
    vision_family_of,
)
from .latents import batch_latents, drop_vae_encoder, vae_scale_factor
from .samplers import INFERENCE_SCHEDULERS, check_sampler, check_sampling_options, inference_scheduler

__all__ = ["INFERENCE_SCHEDULERS", "VISION_FAMILIES", "FluxFamily", "PixArtFamily", "SD3Family", "SDXLFamily",
           "SizeConditioning", "TextConditioning", "UNetFamily", "VisionFamily", "batch_latents",
           "check_image_sides", "check_sampler", "check_sampling_options", "drop_vae_encoder", "find_vision_family",
           "image_side_multiple", "inference_scheduler", "load_diffusers_config", "vae_scale_factor",
           "vision_family_of"]
