"""``LaViBridgePipeline``: text-to-image with a LaVi-Bridge as a diffusers ``DiffusionPipeline``.

Saved layout (``save_pretrained`` / ``diffengine export``): the standard diffusers folders
``tokenizer/``, ``text_encoder/``, ``adapter/``, the denoiser's ``unet/`` (SD, SDXL) or
``transformer/`` (PixArt, SD3, Flux), ``vae/``, ``scheduler/`` and ``model_index.json``. ``text_encoder/``
and the denoiser always hold plain transformers/diffusers models. A component that still carries
its LoRA is saved as its *base* weights plus the LoRA beside it in ``text_encoder_lora/`` /
``unet_lora/`` / ``transformer_lora/`` (peft's ``adapter_config.json`` +
``adapter_model.safetensors``, the format of a bridge's ``text_lora/`` / ``vision_lora/``), which
``from_pretrained`` injects again: the same computation as training, so the same image bit for
bit. After ``merge_lora()`` the LoRA is folded into the base weights and no LoRA folder is
written: the export is a plain diffusers folder (images equal up to float rounding).

A LoRA folder of either kind also loads into a stock diffusers UNet with diffusers' own loader;
its keys carry no ``unet.`` prefix, so pass ``prefix=None``, and pass the saved config as
``metadata`` (without it diffusers assumes alpha = rank)::

    unet.load_lora_adapter(folder, weight_name="adapter_model.safetensors", prefix=None,
                           metadata=LoraConfig.from_pretrained(folder).to_dict())
"""
import json
import logging
import os
import shutil
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from diffusers import AutoencoderKL, DiffusionPipeline, ImagePipelineOutput, ModelMixin, UNet2DConditionModel
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ...language import lm_hidden_states, tokenize_prompts, truncated_parts
from ...lora import base_layers_only, load_lora, lora_layers, merge_lora_layers, save_lora
from ...model_paths import looks_local
from ...vision import (
    TextConditioning,
    VisionFamily,
    check_image_sides,
    check_sampling_options,
    inference_scheduler,
    vision_family_of,
)
from .text_adapter import LaViBridgeTextAdapter

logger = logging.getLogger(__name__)

if TYPE_CHECKING:  # the model imports this module to generate; no import cycle at run time
    from .lavi_bridge import LaViBridge

# the components LaVi-Bridge may put LoRA into (a pipeline has one of the two denoisers)
LORA_COMPONENTS = ("text_encoder", "unet", "transformer")
LORA_FOLDER_SUFFIX = "_lora"
# the from_pretrained options that choose which snapshot of a hub id is downloaded, and how
HUB_DOWNLOAD_OPTIONS = ("revision", "cache_dir", "token", "local_files_only", "proxies")


class LaViBridgePipeline(DiffusionPipeline):
    """Frozen LM (+ LoRA) -> text adapter -> denoiser (+ LoRA), with classifier-free guidance.

    The denoiser is ``unet`` (SD-style UNets) or ``transformer`` (PixArt, SD3, Flux); the other one is None.
    Its vision family (``VISION_FAMILIES``) says how to call it and which diffusers pipeline's
    denoising loop to run. ``max_length``, ``hidden_layer`` and ``use_attention_mask`` are how the
    bridge was trained to read the LM (see ``LanguageModel``), ``resolution`` the image side it
    was trained at (the default height and width; None: the denoiser's native size) and
    ``weight_dtype`` its frozen weights' dtype (what ``from_pretrained`` loads them in); they are
    saved in ``model_index.json``, and the tokenizer is saved with its pad token.
    """

    model_cpu_offload_seq = "text_encoder->adapter->unet->transformer->vae"
    _optional_components = ["unet", "transformer"]

    def __init__(self, tokenizer: PreTrainedTokenizerBase, text_encoder: PreTrainedModel,
                 adapter: LaViBridgeTextAdapter, vae: AutoencoderKL, scheduler: SchedulerMixin,
                 unet: UNet2DConditionModel | None = None,
                 transformer: ModelMixin | None = None, max_length: int = 77,
                 hidden_layer: int = -1, use_attention_mask: bool = False,
                 resolution: int | None = None, weight_dtype: str | None = None):
        super().__init__()
        if (unet is None) == (transformer is None):
            raise ValueError("LaViBridgePipeline needs exactly one denoiser: unet or transformer")
        self.register_modules(tokenizer=tokenizer, text_encoder=text_encoder, adapter=adapter,
                              unet=unet, transformer=transformer, vae=vae, scheduler=scheduler)
        self.register_to_config(max_length=max_length, hidden_layer=hidden_layer,
                                use_attention_mask=use_attention_mask, resolution=resolution,
                                weight_dtype=weight_dtype)

    @property
    def denoiser(self) -> nn.Module:
        """The ``unet`` or the ``transformer``, whichever this pipeline has."""
        return self.unet if self.unet is not None else self.transformer

    @property
    def vision_family(self) -> VisionFamily:
        """The denoiser's family: how to call it and which diffusers loop samples with it."""
        return vision_family_of(type(self.denoiser).__name__, self.denoiser.config)

    @classmethod
    def from_model(cls, model: "LaViBridge", scheduler: str | None = None) -> "LaViBridgePipeline":
        """A pipeline sharing ``model``'s modules (no copy), sampling with the named scheduler
        (None: the default for the model's schedule, see ``inference_scheduler``)."""
        language = model.language
        return cls(tokenizer=language.tokenizer, text_encoder=language.model, adapter=model.adapter,
                   vae=model.vae, **{model.vision_family.subfolder: model.denoiser},
                   scheduler=inference_scheduler(scheduler, model.noise_scheduler.config),
                   max_length=language.max_length, hidden_layer=language.hidden_layer,
                   use_attention_mask=language.use_attention_mask,
                   resolution=model.trained_resolution, weight_dtype=model.bridge_config["weight_dtype"])

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike,
                        **kwargs) -> "LaViBridgePipeline":
        """Load a saved pipeline, injecting the LoRA folders of an unmerged save.

        A hub id is downloaded whole first (``huggingface_hub.snapshot_download`` with the
        ``revision``, ``cache_dir``, ``token`` and ``local_files_only`` given): diffusers would fetch
        only the components ``model_index.json`` names, and the pipeline would load without its LoRA.

        Without a ``dtype`` (or ``torch_dtype``), a low-precision export loads as it was trained:
        its frozen weights in the ``weight_dtype`` its ``model_index.json`` records, the adapter
        (and the LoRA) in float32. Left to diffusers and transformers, the text encoder would keep
        its saved dtype and the denoiser and VAE be upcast to float32, and sample otherwise.
        """
        folder = Path(pretrained_model_name_or_path).expanduser()
        if not folder.is_dir():
            if looks_local(str(pretrained_model_name_or_path)):
                raise FileNotFoundError(f"{pretrained_model_name_or_path} is not a folder (nor a hub id)")
            from huggingface_hub import snapshot_download

            folder = Path(snapshot_download(str(pretrained_model_name_or_path),
                                            **{key: kwargs[key] for key in HUB_DOWNLOAD_OPTIONS if key in kwargs}))
        index = folder / "model_index.json"
        saved = json.loads(index.read_text()).get("weight_dtype") if index.is_file() else None
        if saved not in (None, "float32") and not {"dtype", "torch_dtype"} & kwargs.keys():
            kwargs["dtype"] = {"default": getattr(torch, saved), "adapter": torch.float32}
        pipeline = super().from_pretrained(folder, **kwargs)
        for name, component in pipeline._lora_components():
            lora_dir = folder / f"{name}{LORA_FOLDER_SUFFIX}"
            if lora_dir.is_dir():
                load_lora(component, lora_dir)
        return pipeline

    def _lora_components(self) -> list[tuple[str, nn.Module]]:
        return [(name, getattr(self, name)) for name in LORA_COMPONENTS
                if getattr(self, name) is not None]

    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs) -> None:
        """Save as diffusers does; a component carrying LoRA is saved as base weights + LoRA folder."""
        if kwargs.get("push_to_hub"):
            # diffusers uploads inside its save, before the LoRA folders are written
            raise ValueError("LaViBridgePipeline.save_pretrained(push_to_hub=True) would upload it without its LoRA "
                             "folders: save it, then upload the folder (huggingface_hub.upload_folder)")
        save_directory = Path(save_directory)
        with ExitStack() as stack:
            for _, component in self._lora_components():
                stack.enter_context(base_layers_only(component))
            super().save_pretrained(save_directory, **kwargs)
        for name in LORA_COMPONENTS:
            # a LoRA folder left by an earlier unmerged save would be applied on top of merged weights
            shutil.rmtree(save_directory / f"{name}{LORA_FOLDER_SUFFIX}", ignore_errors=True)
        for name, component in self._lora_components():
            if lora_layers(component):
                save_lora(component, save_directory / f"{name}{LORA_FOLDER_SUFFIX}")

    def merge_lora(self) -> None:
        """Fold the LoRA of the text encoder and denoiser into their weights, in place (no copy).

        The modules are shared with the model the pipeline came from, which is merged too.
        """
        for _, component in self._lora_components():
            merge_lora_layers(component)

    def encode_prompt(self, prompts: list[str]) -> TextConditioning:
        """Prompts -> LM hidden states -> adapter: the denoiser's context, mask and (with a pooled
        head) pooled embedding, in the denoiser's dtype."""
        device = self._execution_device
        for prompt, cut in zip(prompts, truncated_parts(self.tokenizer, prompts, self.config.max_length), strict=True):
            if cut:  # as diffusers' pipelines say of CLIP's 77 tokens
                logger.warning("prompt longer than the bridge's max_length of %d tokens; this part is "
                               "ignored: %r (of %r)", self.config.max_length, cut, prompt)
        tokens = tokenize_prompts(self.tokenizer, prompts, self.config.max_length)
        mask = tokens.attention_mask.to(device)
        hidden = lm_hidden_states(self.text_encoder, tokens.input_ids.to(device), mask,
                                  self.config.hidden_layer, self.config.use_attention_mask)
        return self.adapter.conditioning(hidden, mask, self.denoiser.dtype)

    @torch.no_grad()
    def __call__(self, prompt: str | list[str], negative_prompt: str | list[str] = "",
                 num_inference_steps: int = 50, guidance_scale: float = 7.5,
                 height: int | None = None, width: int | None = None,
                 generator: torch.Generator | None = None, seed: int | None = None,
                 output_type: str = "pil") -> ImagePipelineOutput:
        """Generate one image per prompt; ``seed`` is a shorthand for a seeded ``generator``.

        The unconditional embedding of classifier-free guidance is the negative prompt's, through
        the same LM + adapter.
        """
        # pipelines saved before the bridge recorded its resolution have none: the native size
        resolution = self.config.get("resolution")
        height = resolution if height is None else height
        width = resolution if width is None else width
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        negatives = ([negative_prompt] * len(prompts) if isinstance(negative_prompt, str)
                     else list(negative_prompt))
        if len(negatives) != len(prompts):
            raise ValueError(f"got {len(negatives)} negative prompts for {len(prompts)} prompts")
        check_sampling_options(num_inference_steps, guidance_scale, height, width, seed=seed,
                               negative_prompt=negatives)
        if seed is not None:
            if generator is not None:
                raise ValueError("pass either seed or generator, not both")
            generator = torch.Generator(self._execution_device).manual_seed(seed)
        check_image_sides(self.vision_family.pixel_multiple(self.denoiser.config, self.vae.config),
                          {"height": height, "width": width}, type(self.denoiser).__name__)
        # the denoising loop is diffusers' own for the denoiser's family, fed with our embeddings
        images = self.vision_family.generate(
            self.denoiser, self.vae, self.scheduler, self.encode_prompt(prompts),
            self.encode_prompt(negatives), getattr(self, "_progress_bar_config", {}),
            num_inference_steps=num_inference_steps, guidance_scale=guidance_scale, height=height,
            width=width, generator=generator, output_type=output_type)
        return ImagePipelineOutput(images=images)
