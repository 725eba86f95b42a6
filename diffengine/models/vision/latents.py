"""Images, or the latent distributions precomputed from them, to the latent space a denoiser works in."""
import torch
from diffusers import AutoencoderKL
from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

from diffengine.contracts import LATENTS_KEY, PIXELS_KEY


def vae_scale_factor(vae_config) -> int:
    """Pixels per latent along a side: 2 for each downsampling stage of the VAE (8 for SD's)."""
    return 2 ** (len(vae_config["block_out_channels"]) - 1)  # a model's config, or the dict of its file


def scaled_sample(distribution: DiagonalGaussianDistribution, vae_config) -> torch.Tensor:
    """A sample of a VAE latent distribution in the denoiser's latent space, in float32 NCHW:
    shifted by the VAE's ``shift_factor`` (SD3's and Flux's VAEs have one) and scaled by its
    ``scaling_factor``, as their pipelines undo before decoding.

    Contiguous: a CPU convolution returns channels-last moments, and the training noise
    (``randn_like``) follows the latents' memory layout, so the same random state would noise
    latents from images and from stored parameters (contiguous) differently.
    """
    latents = distribution.sample().float()
    shift = getattr(vae_config, "shift_factor", None)
    if shift is not None:
        latents = latents - shift
    return (latents * vae_config.scaling_factor).contiguous()


@torch.no_grad()
def encode_latents(vae: AutoencoderKL, pixel_values: torch.Tensor) -> torch.Tensor:
    """A sample of the frozen VAE's latent distribution, shifted and scaled (``scaled_sample``), in float32.

    ``pixel_values`` are in [-1, 1]; they are cast to the VAE's dtype. The result is float32 so
    that noising happens in full precision.
    """
    return scaled_sample(vae.encode(pixel_values.to(vae.dtype)).latent_dist, vae.config)


@torch.no_grad()
def latents_from_parameters(vae: AutoencoderKL, parameters: torch.Tensor) -> torch.Tensor:
    """``encode_latents`` from stored ``latent_dist.parameters`` (mean and logvar on channels).

    Sampled in float32 (stored float16 parameters are widened first): with a float32 VAE and the
    same random state this is the latent ``encode_latents`` draws from the image.
    """
    return scaled_sample(DiagonalGaussianDistribution(parameters.float()), vae.config)


def batch_latents(vae: AutoencoderKL, inputs: dict) -> torch.Tensor:
    """The training latents of a batch: sampled from its ``latent_parameters`` (latent shards of
    ``diffengine prep-latents``), or from its encoded ``pixel_values`` in [-1, 1].

    Raises ValueError for pixels when ``drop_vae_encoder`` freed the encoder, and for latents of
    another VAE's channel count.
    """
    if LATENTS_KEY in inputs:
        stored = inputs[LATENTS_KEY].shape[1] // 2
        if stored != vae.config.latent_channels:
            raise ValueError(f"the latent shards hold {stored}-channel latents and this model's VAE makes "
                             f"{vae.config.latent_channels}: they were encoded by another base model's VAE; run "
                             "prep-latents again with --vision-model set to this model's vision_model")
        return latents_from_parameters(vae, inputs[LATENTS_KEY])
    if not has_vae_encoder(vae):
        raise ValueError("this model was built with vae_encoder=False and cannot encode a batch of "
                         "pixels: train it from latent shards (diffengine prep-latents), or set "
                         "model.vae_encoder=True")
    return encode_latents(vae, inputs[PIXELS_KEY])


def drop_vae_encoder(vae: AutoencoderKL) -> None:
    """Free the encoder half of ``vae`` (encoder and quant_conv); decoding still works."""
    vae.encoder = None
    vae.quant_conv = None


def has_vae_encoder(vae: AutoencoderKL) -> bool:
    """False once ``drop_vae_encoder`` ran."""
    return vae.encoder is not None
