"""Images, or the latent distributions precomputed from them, to the latent space a denoiser works in."""
import torch
from diffusers import AutoencoderKL
from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution


def scaled_sample(distribution: DiagonalGaussianDistribution, scaling_factor: float) -> torch.Tensor:
    """A sample of a VAE latent distribution, scaled by the VAE's ``scaling_factor``, in float32 NCHW.

    Contiguous: a CPU convolution returns channels-last moments, and the training noise
    (``randn_like``) follows the latents' memory layout, so the same random state would noise
    latents from images and from stored parameters (contiguous) differently.
    """
    return (distribution.sample().float() * scaling_factor).contiguous()


@torch.no_grad()
def encode_latents(vae: AutoencoderKL, pixel_values: torch.Tensor) -> torch.Tensor:
    """A sample of the frozen VAE's latent distribution, scaled by its ``scaling_factor``, in float32.

    ``pixel_values`` are in [-1, 1]; they are cast to the VAE's dtype. The result is float32 so
    that noising happens in full precision.
    """
    return scaled_sample(vae.encode(pixel_values.to(vae.dtype)).latent_dist, vae.config.scaling_factor)


@torch.no_grad()
def latents_from_parameters(vae: AutoencoderKL, parameters: torch.Tensor) -> torch.Tensor:
    """``encode_latents`` from stored ``latent_dist.parameters`` (mean and logvar on channels).

    Sampled in float32 (stored float16 parameters are widened first): with a float32 VAE and the
    same random state this is the latent ``encode_latents`` draws from the image.
    """
    return scaled_sample(DiagonalGaussianDistribution(parameters.float()), vae.config.scaling_factor)


def drop_vae_encoder(vae: AutoencoderKL) -> None:
    """Free the encoder half of ``vae`` (encoder and quant_conv); decoding still works."""
    vae.encoder = None
    vae.quant_conv = None


def has_vae_encoder(vae: AutoencoderKL) -> bool:
    """False once ``drop_vae_encoder`` ran."""
    return vae.encoder is not None
