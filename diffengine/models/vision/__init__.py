"""Vision side of a bridge: one entry per generative vision model family."""
from .families import VISION_FAMILIES, PixArtFamily, UNetFamily, VisionFamily, find_vision_family, vision_family_of
from .latents import drop_vae_encoder, encode_latents, has_vae_encoder, latents_from_parameters
from .samplers import INFERENCE_SCHEDULERS, inference_scheduler

__all__ = ["INFERENCE_SCHEDULERS", "VISION_FAMILIES", "PixArtFamily", "UNetFamily", "VisionFamily",
           "drop_vae_encoder", "encode_latents", "find_vision_family", "has_vae_encoder", "inference_scheduler",
           "latents_from_parameters", "vision_family_of"]
