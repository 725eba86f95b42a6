"""Images to the latent space a denoiser works in."""
import torch
from diffusers import AutoencoderKL


@torch.no_grad()
def encode_latents(vae: AutoencoderKL, pixel_values: torch.Tensor) -> torch.Tensor:
    """A sample of the frozen VAE's latent distribution, scaled by its ``scaling_factor``, in float32.

    ``pixel_values`` are in [-1, 1]; they are cast to the VAE's dtype. The result is float32 so
    that noising happens in full precision.
    """
    latents = vae.encode(pixel_values.to(vae.dtype)).latent_dist.sample()
    return latents.float() * vae.config.scaling_factor
