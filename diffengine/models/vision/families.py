"""One entry per generative vision model family: everything that differs between denoisers.

A family says which diffusers class loads the denoiser and from which subfolder of a base-model
folder, where its LoRA goes, which config key gives the width the text adapter must output, how to
call it for a noise (or velocity) prediction, and which diffusers pipeline's denoising loop
generates with it. Nothing outside this module branches on the family: a bridge hands every
family the same ``TextConditioning`` (context, mask, pooled) and ``SizeConditioning`` (each
sample's original size, crop and target size), and each family takes what it needs.
"""
import functools
import inspect
from collections.abc import Mapping
from dataclasses import dataclass

import diffusers
import torch
from diffusers import AutoencoderKL, DiffusionPipeline
from diffusers.configuration_utils import ConfigMixin
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from torch import nn

from diffengine.contracts import CROP_TOP_LEFT_KEY, ORIGINAL_SIZE_KEY

from .latents import vae_scale_factor


@functools.cache  # Flux's training step asks for its pipeline's packing helpers every step
def diffusers_pipeline_class(name: str) -> type[DiffusionPipeline]:
    """A diffusers pipeline class, imported without transformers' import-time noise."""
    from transformers.utils import logging as transformers_logging

    # the import pulls in transformers' image processors, which warn that torchvision is absent
    # although these pipelines never use them
    verbosity = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()
    try:
        return getattr(diffusers, name)
    finally:
        transformers_logging.set_verbosity(verbosity)


@dataclass(frozen=True)
class TextConditioning:
    """What a bridge makes of a batch of prompts for the denoiser."""

    context: torch.Tensor  # (B, L, D): the adapter's output, the denoiser's text sequence
    mask: torch.Tensor  # (B, L): 1 for real tokens, 0 for padding
    pooled: torch.Tensor | None = None  # (B, P): one vector per prompt, for families that take one


@dataclass(frozen=True)
class SizeConditioning:
    """Each sample's image geometry as (height, width) / (top, left) int rows, for micro-conditioning.

    ``original_size`` is the image's size before resizing, ``crop_top_left`` the crop's offset in
    the resized image, ``target_size`` the trained image size; all (B, 2).
    """

    original_size: torch.Tensor
    crop_top_left: torch.Tensor
    target_size: torch.Tensor

    @classmethod
    def of_batch(cls, inputs: dict, target_size: tuple[int, int]) -> "SizeConditioning | None":
        """The sizes the loader recorded in a batch's ``inputs`` (None when it recorded none)."""
        if ORIGINAL_SIZE_KEY not in inputs or CROP_TOP_LEFT_KEY not in inputs:
            return None
        original = inputs[ORIGINAL_SIZE_KEY]
        # filled on the device: a tensor built from Python numbers would be a copy to the GPU
        # that waits for it every step
        target = torch.empty_like(original)
        target[:, 0], target[:, 1] = target_size
        return cls(original, inputs[CROP_TOP_LEFT_KEY], target)


@dataclass(frozen=True)
class VisionFamily:
    """How a family of denoisers plugs into a bridge (subclasses say how to call and sample it)."""

    class_names: tuple[str, ...]  # diffusers ``_class_name`` values of the denoiser's config
    model_class: str  # the diffusers class that loads it
    subfolder: str  # where it lives in a base-model folder; also its name in models and pipelines
    lora_target_classes: tuple[str, ...]  # the paper's VIS_REPLACE_MODULES
    context_dim_key: str  # config key giving the width the adapter must output
    pipeline_class: str  # the diffusers pipeline whose denoising loop generates with it
    # a UNet's config value that tells SD (none) from SDXL ("text_time"); None for transformers
    addition_embed_type: str | None = None

    def matches(self, class_name: str, config: Mapping) -> bool:
        """Whether a denoiser of this class and config belongs to this family."""
        return (class_name in self.class_names
                and config.get("addition_embed_type") == self.addition_embed_type)

    def pooled_dim(self, config: Mapping) -> int | None:
        """Width of the pooled text embedding the denoiser takes (None: it takes none)."""
        return None

    def latent_multiple(self, config: Mapping) -> int:
        """What the latents' sides must be a multiple of: a transformer's patch size (1: any size,
        as UNets pass odd sizes to their upsamplers)."""
        return config.get("patch_size") or 1

    def pixel_multiple(self, config: Mapping, vae_config: Mapping) -> int:
        """What image sides must be a multiple of, in pixels: the latent multiple times the VAE's scale."""
        return self.latent_multiple(config) * vae_scale_factor(vae_config)

    def denoiser_config(self, vision_model: str) -> dict:
        """The denoiser's config as its class reads it (the saved values over the class's defaults),
        read without loading its weights, so settings are checked against it in a second."""
        parameters = inspect.signature(getattr(diffusers, self.model_class).__init__).parameters.values()
        defaults = {p.name: p.default for p in parameters if p.default is not inspect.Parameter.empty}
        return {**defaults, **load_diffusers_config(vision_model, self.subfolder)}

    def load(self, vision_model: str, dtype: torch.dtype) -> nn.Module:
        """The denoiser of a base-model folder (or hub id), in ``dtype``."""
        return getattr(diffusers, self.model_class).from_pretrained(
            vision_model, subfolder=self.subfolder, torch_dtype=dtype)

    def predict(self, denoiser: nn.Module, latents: torch.Tensor, timesteps: torch.Tensor,
                text: TextConditioning, sizes: SizeConditioning | None = None) -> torch.Tensor:
        """The denoiser's prediction (noise or velocity) for noisy ``latents``."""
        raise NotImplementedError

    def generate(self, denoiser: nn.Module, vae: AutoencoderKL, scheduler: SchedulerMixin,
                 embeds: TextConditioning, negative_embeds: TextConditioning,
                 progress_bar_config: dict, **kwargs) -> list | object:
        """Images from prompt and negative-prompt conditionings with diffusers' own denoising loop."""
        pipeline = self._pipeline(denoiser, vae, scheduler)
        pipeline.set_progress_bar_config(**progress_bar_config)
        return pipeline(**self._embedding_kwargs(embeds, negative_embeds), **kwargs).images

    def _pipeline(self, denoiser: nn.Module, vae: AutoencoderKL,
                  scheduler: SchedulerMixin) -> DiffusionPipeline:
        raise NotImplementedError

    def _embedding_kwargs(self, embeds: TextConditioning, negative_embeds: TextConditioning) -> dict:
        raise NotImplementedError


@dataclass(frozen=True)
class UNetFamily(VisionFamily):
    """SD 1.x/2.x-style ``UNet2DConditionModel``: no text mask, output is the prediction."""

    def predict(self, denoiser, latents, timesteps, text, sizes=None):
        """``unet(latents, t, encoder_hidden_states=context).sample`` (SD UNets take no text mask)."""
        return denoiser(latents, timesteps, encoder_hidden_states=text.context).sample

    def _pipeline(self, denoiser, vae, scheduler):
        return diffusers_pipeline_class(self.pipeline_class)(
            vae=vae, text_encoder=None, tokenizer=None, unet=denoiser, scheduler=scheduler,
            safety_checker=None, feature_extractor=None, requires_safety_checker=False)

    def _embedding_kwargs(self, embeds, negative_embeds):
        return {"prompt_embeds": embeds.context, "negative_prompt_embeds": negative_embeds.context}


# SDXL's micro-conditions: original size, crop top-left and target size, two numbers each
SDXL_TIME_IDS = 6


def _pooled_embedding_kwargs(embeds: TextConditioning, negative_embeds: TextConditioning) -> dict:
    """The embedding arguments of the diffusers pipelines that take a pooled embedding (SDXL, SD3, Flux)."""
    return {"prompt_embeds": embeds.context, "pooled_prompt_embeds": embeds.pooled,
            "negative_prompt_embeds": negative_embeds.context,
            "negative_pooled_prompt_embeds": negative_embeds.pooled}


@dataclass(frozen=True)
class SDXLFamily(VisionFamily):
    """SDXL base ``UNet2DConditionModel`` (``addition_embed_type="text_time"``): it also takes a
    pooled text embedding and six size/crop time ids (``added_cond_kwargs``)."""

    def pooled_dim(self, config):
        """The pooled width: the added embedding's input less the time ids' sinusoidal embeddings."""
        return (config["projection_class_embeddings_input_dim"]
                - SDXL_TIME_IDS * config["addition_time_embed_dim"])

    def predict(self, denoiser, latents, timesteps, text, sizes=None):
        """The UNet's prediction with ``time_ids = original_size + crop_top_left + target_size``.

        As in diffusers' SDXL training example and pipeline (``_get_add_time_ids``), per sample.
        The ids stay float32: the UNet embeds them sinusoidally in float32 anyway, and bfloat16
        would round odd sizes such as 1023.
        """
        if sizes is None:
            raise ValueError("SDXL needs each image's original size and crop (the batch's original_size "
                             "and crop_top_left), which image shards give and latent shards record "
                             "since prep-latents writes them: run prep-latents again, or train from "
                             "image shards")
        time_ids = torch.cat([sizes.original_size, sizes.crop_top_left, sizes.target_size], dim=1)
        return denoiser(latents, timesteps, encoder_hidden_states=text.context,
                        added_cond_kwargs={"text_embeds": text.pooled,
                                           "time_ids": time_ids.float()}).sample

    def _pipeline(self, denoiser, vae, scheduler):
        return diffusers_pipeline_class(self.pipeline_class)(
            vae=vae, text_encoder=None, text_encoder_2=None, tokenizer=None, tokenizer_2=None,
            unet=denoiser, scheduler=scheduler, add_watermarker=False)

    def _embedding_kwargs(self, embeds, negative_embeds):
        # the pipeline's time ids: original and target size = (height, width), crop (0, 0)
        return _pooled_embedding_kwargs(embeds, negative_embeds)


@dataclass(frozen=True)
class PixArtFamily(VisionFamily):
    """PixArt-alpha transformers: the text mask goes in, and the output may carry learned sigma."""

    def predict(self, denoiser, latents, timesteps, text, sizes=None):
        """The transformer's prediction; of a learned-sigma output only the first (epsilon) half."""
        if denoiser.use_additional_conditions:
            raise NotImplementedError(
                "PixArt transformers conditioned on resolution and aspect ratio (sample_size 128, "
                "the 1024-MS models) are not supported yet; the 512 px model is")
        # the 512 px model has no micro-conditions, but its forward still expects the dict
        output = denoiser(latents, encoder_hidden_states=text.context, timestep=timesteps,
                          encoder_attention_mask=text.mask,
                          added_cond_kwargs={"resolution": None, "aspect_ratio": None}).sample
        return _without_learned_sigma(denoiser, output)

    def _pipeline(self, denoiser, vae, scheduler):
        return diffusers_pipeline_class(self.pipeline_class)(
            tokenizer=None, text_encoder=None, vae=vae, transformer=denoiser, scheduler=scheduler)

    def _embedding_kwargs(self, embeds, negative_embeds):
        # the pipeline drops the learned-sigma half itself; negative_prompt=None because it refuses
        # a negative prompt next to negative embeddings. Binning would resize to its own sizes
        # (and rejects tiny models); height/width are used as given, as on the UNet path
        return {"prompt_embeds": embeds.context, "prompt_attention_mask": embeds.mask,
                "negative_prompt_embeds": negative_embeds.context,
                "negative_prompt_attention_mask": negative_embeds.mask, "negative_prompt": None,
                "use_resolution_binning": False}


@dataclass(frozen=True)
class SD3Family(VisionFamily):
    """SD3 / SD3.5 MMDiT (``SD3Transformer2DModel``): a text sequence and a pooled embedding in,
    the flow-matching velocity out; the timestep on the schedule's 0-1000 scale."""

    def pooled_dim(self, config):
        """The width of ``pooled_projections`` (SD3: 2048, the two CLIPs' pooled outputs)."""
        return config["pooled_projection_dim"]

    def predict(self, denoiser, latents, timesteps, text, sizes=None):
        """``transformer(latents, context, pooled, t).sample``, as SD3's pipeline calls it (no text mask)."""
        return denoiser(hidden_states=latents, encoder_hidden_states=text.context,
                        pooled_projections=text.pooled, timestep=timesteps).sample

    def _pipeline(self, denoiser, vae, scheduler):
        return diffusers_pipeline_class(self.pipeline_class)(
            transformer=denoiser, scheduler=scheduler, vae=vae, text_encoder=None, tokenizer=None,
            text_encoder_2=None, tokenizer_2=None, text_encoder_3=None, tokenizer_3=None)

    def _embedding_kwargs(self, embeds, negative_embeds):
        return _pooled_embedding_kwargs(embeds, negative_embeds)


# the guidance FLUX.1-dev's guidance embedding is given, in training as at inference: FluxPipeline's
# default, which diffusers' and kohya's Flux LoRA trainers also train with
FLUX_DISTILLED_GUIDANCE = 3.5


@dataclass(frozen=True)
class FluxFamily(VisionFamily):
    """FLUX.1 (``FluxTransformer2DModel``): latents packed into 2x2 patches with position ids, a
    pooled embedding, the timestep as a fraction of 1000 and, for guidance-distilled models (dev),
    the guidance embedding's value."""

    def pooled_dim(self, config):
        """The width of ``pooled_projections`` (FLUX.1: 768, CLIP-L's pooled output)."""
        return config["pooled_projection_dim"]

    def latent_multiple(self, config):
        """2: latents are packed into 2 x 2 patches (the transformer's own patch_size is 1)."""
        return 2

    def predict(self, denoiser, latents, timesteps, text, sizes=None):
        """The velocity for (B, C, h, w) ``latents``, packed and unpacked as FluxPipeline does."""
        batch, channels, height, width = latents.shape
        pipeline = diffusers_pipeline_class(self.pipeline_class)
        packed = pipeline._pack_latents(latents, batch, channels, height, width)
        guidance = (torch.full((batch,), FLUX_DISTILLED_GUIDANCE, device=latents.device)
                    if denoiser.config.guidance_embeds else None)
        output = denoiser(hidden_states=packed, encoder_hidden_states=text.context,
                          pooled_projections=text.pooled, timestep=timesteps / 1000, guidance=guidance,
                          txt_ids=latents.new_zeros(text.context.shape[1], 3),
                          img_ids=flux_image_ids(height // 2, width // 2, latents)).sample
        # unpacked at latent size: FluxPipeline's helper takes pixels and the VAE's scale, here 1
        return pipeline._unpack_latents(output, height, width, 1)

    def generate(self, denoiser, vae, scheduler, embeds, negative_embeds, progress_bar_config, **kwargs):
        """FluxPipeline's loop; ``guidance_scale`` is classifier-free guidance with the negative
        prompt (FluxPipeline's ``true_cfg_scale``), as for every family, and a guidance-distilled
        model's embedding gets the value it was trained with."""
        kwargs["true_cfg_scale"] = kwargs.pop("guidance_scale")
        return super().generate(denoiser, vae, scheduler, embeds, negative_embeds, progress_bar_config,
                                guidance_scale=FLUX_DISTILLED_GUIDANCE, **kwargs)

    def _pipeline(self, denoiser, vae, scheduler):
        return diffusers_pipeline_class(self.pipeline_class)(
            scheduler=scheduler, vae=vae, text_encoder=None, tokenizer=None, text_encoder_2=None,
            tokenizer_2=None, transformer=denoiser)

    def _embedding_kwargs(self, embeds, negative_embeds):
        return _pooled_embedding_kwargs(embeds, negative_embeds)


def flux_image_ids(height: int, width: int, like: torch.Tensor) -> torch.Tensor:
    """Flux's (height * width, 3) position ids of packed latents, (0, row, column), made on
    ``like``'s device (FluxPipeline builds them on the host: a copy to the GPU every step)."""
    rows = torch.arange(height, device=like.device).repeat_interleave(width)
    columns = torch.arange(width, device=like.device).repeat(height)
    return torch.stack([torch.zeros_like(rows), rows, columns], dim=1).to(like.dtype)


def _without_learned_sigma(denoiser: nn.Module, output: torch.Tensor) -> torch.Tensor:
    """The first half of the channels when the model also predicts its variance (out = 2 x in)."""
    if denoiser.config.out_channels == 2 * denoiser.config.in_channels:
        return output.chunk(2, dim=1)[0]
    return output


VISION_FAMILIES: dict[str, VisionFamily] = {
    "sd_unet": UNetFamily(
        class_names=("UNet2DConditionModel",),
        model_class="UNet2DConditionModel",
        subfolder="unet",
        lora_target_classes=("ResnetBlock2D", "CrossAttention", "Attention", "GEGLU"),
        context_dim_key="cross_attention_dim",
        pipeline_class="StableDiffusionPipeline"),
    "sdxl": SDXLFamily(
        class_names=("UNet2DConditionModel",),
        model_class="UNet2DConditionModel",
        subfolder="unet",
        # the paper's SD set: SDXL's blocks are the same ResnetBlock2D / Attention / GEGLU classes
        lora_target_classes=("ResnetBlock2D", "CrossAttention", "Attention", "GEGLU"),
        context_dim_key="cross_attention_dim",
        pipeline_class="StableDiffusionXLPipeline",
        addition_embed_type="text_time"),
    "pixart": PixArtFamily(
        # PixArt-alpha's hub checkpoints name the generic Transformer2DModel, which diffusers
        # loads as PixArtTransformer2DModel for their norm_type "ada_norm_single"
        class_names=("PixArtTransformer2DModel", "Transformer2DModel"),
        model_class="PixArtTransformer2DModel",
        subfolder="transformer",
        # the authors' set; PixArt's feed-forwards use GELU, not GEGLU, so only the attention
        # projections (to_q, to_k, to_v, to_out.0 of attn1 and attn2) get LoRA
        lora_target_classes=("Attention", "GEGLU"),
        # the adapter feeds the transformer's caption projection (T5-XXL width, 4096)
        context_dim_key="caption_channels",
        pipeline_class="PixArtAlphaPipeline"),
    "sd3": SD3Family(
        class_names=("SD3Transformer2DModel",),
        model_class="SD3Transformer2DModel",
        subfolder="transformer",
        # every Linear of each Attention: in joint attention the image stream's to_q/k/v/out and
        # the text stream's add_q/k/v_proj/to_add_out (where the bridged text meets the image), and
        # SD3.5's extra image self-attention (attn2); the feed-forwards (GELU) are left alone, as
        # on PixArt. diffusers' SD3 LoRA example takes the same joint projections, without attn2.
        # The last block's add_q_proj LoRA never trains: that block drops its text stream's output
        lora_target_classes=("Attention",),
        # the adapter feeds the context embedder (T5-XXL width, 4096)
        context_dim_key="joint_attention_dim",
        pipeline_class="StableDiffusion3Pipeline"),
    "flux": FluxFamily(
        class_names=("FluxTransformer2DModel",),
        model_class="FluxTransformer2DModel",
        subfolder="transformer",
        # every Linear of each FluxAttention: the double-stream blocks' joint projections of both
        # streams, and the single-stream blocks' to_q/k/v over text and image tokens together
        # (their proj_mlp/proj_out are the feed-forward, as ff/ff_context are in double blocks)
        lora_target_classes=("FluxAttention",),
        context_dim_key="joint_attention_dim",
        pipeline_class="FluxPipeline"),
}


def vision_family_of(class_name: str, config: Mapping) -> VisionFamily:
    """Return the family of a diffusers denoiser (its class name and config) or raise a clear error."""
    for family in VISION_FAMILIES.values():
        if family.matches(class_name, config):
            return family
    supported = {f.addition_embed_type for f in VISION_FAMILIES.values() if class_name in f.class_names}
    if supported:
        raise ValueError(f"{class_name} with addition_embed_type={config.get('addition_embed_type')!r} "
                         "has no LaVi-Bridge family (supported: "
                         f"{', '.join(sorted(map(repr, supported)))}); add one to VISION_FAMILIES.")
    known = sorted({n for f in VISION_FAMILIES.values() for n in f.class_names})
    raise ValueError(f"Vision model class '{class_name}' has no LaVi-Bridge family "
                     f"(known: {', '.join(known)}); add one to VISION_FAMILIES.")


def find_vision_family(vision_model: str) -> VisionFamily:
    """The family of the denoiser in a diffusers base-model folder (or hub id), by its subfolder and config."""
    subfolders = dict.fromkeys(f.subfolder for f in VISION_FAMILIES.values())
    errors = []
    for subfolder in subfolders:
        try:
            config = load_diffusers_config(vision_model, subfolder)
        except OSError as err:
            errors.append(f"{subfolder}/: {err}")
            continue
        return vision_family_of(config["_class_name"], config)
    raise ValueError(f"{vision_model} holds no denoiser config in any of "
                     f"{', '.join(f'{s}/' for s in subfolders)}: not a diffusers base-model folder "
                     f"of a supported family? ({'; '.join(errors)})")


def load_diffusers_config(folder: str, subfolder: str, config_name: str = "config.json") -> dict:
    """A diffusers base-model folder's ``subfolder/config_name`` of any class (OSError when missing)."""
    # ConfigMixin.load_config reads the file its class names, so a class per file name
    reader = type("DiffusersConfig", (ConfigMixin,), {"config_name": config_name})
    return reader.load_config(folder, subfolder=subfolder)


def vae_config_of(vision_model: str) -> dict | None:
    """A base model's ``vae/config.json``: a local folder's, or a hub id's (from the hub, or its cache
    when offline); None where it cannot be read (the model's loading says why)."""
    try:
        return dict(load_diffusers_config(vision_model, "vae"))
    except (OSError, ValueError):
        return None


def image_side_multiple(vision_model: str) -> int:
    """What image sides must be a multiple of, in pixels, for a diffusers base-model folder: its
    denoiser's latent patch times its VAE's scale, read from the configs (no weights)."""
    family = find_vision_family(vision_model)
    return family.pixel_multiple(family.denoiser_config(vision_model), load_diffusers_config(vision_model, "vae"))


def check_image_sides(multiple: int, sides: Mapping[str, int | None], model: str) -> None:
    """Raise ValueError naming the first side (``{option: pixels}``) that is not a multiple of
    ``multiple``: PixArt, SD3 and Flux patch latents in 2 x 2, so 8-pixel steps are not enough
    (SD3's pipeline refuses such a size only once loaded, Flux's silently makes a smaller image)."""
    for name, side in sides.items():
        if side is not None and side % multiple:
            raise ValueError(f"{name} must be a multiple of {multiple} pixels for {model} (its denoiser's "
                             f"latent patch x its VAE's scale), got {side}")
