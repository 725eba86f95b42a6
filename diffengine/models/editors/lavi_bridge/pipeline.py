"""``LaViBridgePipeline``: text-to-image with a LaVi-Bridge as a diffusers ``DiffusionPipeline``.

Saved layout (``save_pretrained`` / ``diffengine export``): the standard diffusers folders
``tokenizer/``, ``text_encoder/``, ``adapter/``, ``unet/``, ``vae/``, ``scheduler/`` and
``model_index.json``. ``text_encoder/`` and ``unet/`` always hold plain transformers/diffusers
models. A component that still carries its LoRA is saved as its *base* weights plus the LoRA
beside it in ``text_encoder_lora/`` / ``unet_lora/`` (peft's ``adapter_config.json`` +
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
import os
import shutil
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DiffusionPipeline, ImagePipelineOutput, UNet2DConditionModel
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from peft import LoraConfig
from peft.functional import (cast_adapter_dtype, get_peft_model_state_dict, inject_adapter_in_model,
                             set_peft_model_state_dict)
from peft.tuners.tuners_utils import BaseTunerLayer
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ...language import lm_hidden_states, tokenize_prompts
from .lavi_bridge import INFERENCE_SCHEDULERS, LORA_WEIGHTS, LaViBridge
from .text_adapter import LaViBridgeTextAdapter

LORA_COMPONENTS = ("text_encoder", "unet")  # the components LaVi-Bridge puts LoRA into
LORA_FOLDER_SUFFIX = "_lora"
ADAPTER_NAME = "default"  # the name inject_adapter_in_model gives a LoRA


def lora_layers(model: nn.Module) -> list[tuple[str, BaseTunerLayer]]:
    """The peft LoRA layers of ``model`` with their module names."""
    return [(name, module) for name, module in model.named_modules()
            if isinstance(module, BaseTunerLayer)]


@contextmanager
def base_layers_only(model: nn.Module) -> Iterator[nn.Module]:
    """Temporarily put every LoRA layer's base layer back in its place (to save the base model)."""
    layers = lora_layers(model)
    for name, layer in layers:
        model.set_submodule(name, layer.get_base_layer())
    try:
        yield model
    finally:
        for name, layer in layers:
            model.set_submodule(name, layer)


def merge_lora_layers(model: nn.Module) -> nn.Module:
    """Fold every LoRA layer into its base layer and unwrap it, in place; returns the plain model.

    peft's ``merge_and_unload`` lives on ``LoraModel``/``PeftModel`` wrappers, which models given
    LoRA with ``inject_adapter_in_model`` do not have; this is its per-layer equivalent.
    """
    for name, layer in lora_layers(model):
        layer.merge()
        model.set_submodule(name, layer.get_base_layer())
    # inject_adapter_in_model leaves its config on the model; a plain model must not claim a LoRA
    if hasattr(model, "peft_config"):
        del model.peft_config
    return model


def save_lora(model: nn.Module, directory: str | Path) -> None:
    """Write ``model``'s LoRA as a peft adapter folder (config + float32 safetensors)."""
    directory = Path(directory)
    model.peft_config[ADAPTER_NAME].save_pretrained(directory)
    state = {k: v.detach().to("cpu", torch.float32).contiguous()
             for k, v in get_peft_model_state_dict(model, adapter_name=ADAPTER_NAME).items()}
    save_file(state, directory / LORA_WEIGHTS)


def load_lora(model: nn.Module, directory: str | Path) -> nn.Module:
    """Inject the LoRA of a peft adapter folder (``save_lora``'s format) into ``model``; returns it."""
    directory = Path(directory)
    inject_adapter_in_model(LoraConfig.from_pretrained(directory), model, adapter_name=ADAPTER_NAME)
    # LoRA trains in float32 on low-precision base weights: run it that way, and upcast before
    # loading so the saved float32 values are not rounded
    cast_adapter_dtype(model, ADAPTER_NAME)
    result = set_peft_model_state_dict(model, load_file(directory / LORA_WEIGHTS),
                                       adapter_name=ADAPTER_NAME)
    missing = [k for k in result.missing_keys if "lora_" in k]
    if missing:
        raise ValueError(f"{directory} lacks {len(missing)} LoRA tensors, e.g. {missing[0]}")
    # the new dropout layers start in training mode
    return model.eval()


def _stable_diffusion_pipeline_class() -> type[DiffusionPipeline]:
    """diffusers' ``StableDiffusionPipeline``, imported without transformers' import-time noise."""
    from transformers.utils import logging as transformers_logging

    # the import pulls in transformers' image processors, which warn that torchvision is absent
    # although these pipelines never use them
    verbosity = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()
    try:
        from diffusers import StableDiffusionPipeline
    finally:
        transformers_logging.set_verbosity(verbosity)
    return StableDiffusionPipeline


class LaViBridgePipeline(DiffusionPipeline):
    """Frozen LM (+ LoRA) -> text adapter -> SD-style UNet (+ LoRA), with classifier-free guidance.

    ``max_length``, ``hidden_layer`` and ``use_attention_mask`` are how the bridge was trained to
    read the LM (see ``FrozenLanguageModel``); they are saved in ``model_index.json``.
    """

    model_cpu_offload_seq = "text_encoder->adapter->unet->vae"

    def __init__(self, tokenizer: PreTrainedTokenizerBase, text_encoder: PreTrainedModel,
                 adapter: LaViBridgeTextAdapter, unet: UNet2DConditionModel, vae: AutoencoderKL,
                 scheduler: SchedulerMixin, max_length: int = 77, hidden_layer: int = -1,
                 use_attention_mask: bool = False):
        super().__init__()
        self.register_modules(tokenizer=tokenizer, text_encoder=text_encoder, adapter=adapter,
                              unet=unet, vae=vae, scheduler=scheduler)
        self.register_to_config(max_length=max_length, hidden_layer=hidden_layer,
                                use_attention_mask=use_attention_mask)

    @classmethod
    def from_model(cls, model: LaViBridge, scheduler: str = "unipc") -> "LaViBridgePipeline":
        """A pipeline sharing ``model``'s modules (no copy), sampling with the named scheduler."""
        if scheduler not in INFERENCE_SCHEDULERS:
            raise ValueError(f"scheduler must be one of {sorted(INFERENCE_SCHEDULERS)}, got '{scheduler}'")
        language = model.language
        return cls(tokenizer=language.tokenizer, text_encoder=language.model, adapter=model.adapter,
                   unet=model.unet, vae=model.vae,
                   scheduler=INFERENCE_SCHEDULERS[scheduler].from_config(model.noise_scheduler.config),
                   max_length=language.max_length, hidden_layer=language.hidden_layer,
                   use_attention_mask=language.use_attention_mask)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike,
                        **kwargs) -> "LaViBridgePipeline":
        """Load a saved pipeline, injecting the LoRA folders of an unmerged save (local folders only).

        A low-precision export loads as it was trained (adapter and LoRA in float32) with
        ``dtype={"default": torch.bfloat16, "adapter": torch.float32}``.
        """
        pipeline = super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        for name in LORA_COMPONENTS:
            lora_dir = Path(pretrained_model_name_or_path) / f"{name}{LORA_FOLDER_SUFFIX}"
            if lora_dir.is_dir():
                load_lora(getattr(pipeline, name), lora_dir)
        return pipeline

    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs) -> None:
        """Save as diffusers does; a component carrying LoRA is saved as base weights + LoRA folder."""
        save_directory = Path(save_directory)
        with ExitStack() as stack:
            for name in LORA_COMPONENTS:
                stack.enter_context(base_layers_only(getattr(self, name)))
            super().save_pretrained(save_directory, **kwargs)
        for name in LORA_COMPONENTS:
            lora_dir = save_directory / f"{name}{LORA_FOLDER_SUFFIX}"
            # a LoRA folder left by an earlier unmerged save would be applied on top of merged weights
            shutil.rmtree(lora_dir, ignore_errors=True)
            if lora_layers(getattr(self, name)):
                save_lora(getattr(self, name), lora_dir)

    def merge_lora(self) -> None:
        """Fold the LoRA of the text encoder and UNet into their weights, in place (no copy is made).

        The modules are shared with the model the pipeline came from, which is merged too.
        """
        for name in LORA_COMPONENTS:
            merge_lora_layers(getattr(self, name))

    def encode_prompt(self, prompts: list[str]) -> torch.Tensor:
        """Prompts -> LM hidden states -> adapter: the UNet's context, in the UNet's dtype."""
        device = self._execution_device
        tokens = tokenize_prompts(self.tokenizer, prompts, self.config.max_length)
        hidden = lm_hidden_states(self.text_encoder, tokens.input_ids.to(device),
                                  tokens.attention_mask.to(device), self.config.hidden_layer,
                                  self.config.use_attention_mask)
        return self.adapter(hidden.to(self.adapter.dtype)).to(self.unet.dtype)

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
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        negatives = ([negative_prompt] * len(prompts) if isinstance(negative_prompt, str)
                     else list(negative_prompt))
        if len(negatives) != len(prompts):
            raise ValueError(f"got {len(negatives)} negative prompts for {len(prompts)} prompts")
        if seed is not None:
            if generator is not None:
                raise ValueError("pass either seed or generator, not both")
            generator = torch.Generator(self._execution_device).manual_seed(seed)
        # the denoising loop is diffusers' own, fed with our embeddings
        denoiser = _stable_diffusion_pipeline_class()(
            vae=self.vae, text_encoder=None, tokenizer=None, unet=self.unet, scheduler=self.scheduler,
            safety_checker=None, feature_extractor=None, requires_safety_checker=False)
        denoiser.set_progress_bar_config(**getattr(self, "_progress_bar_config", {}))
        images = denoiser(prompt_embeds=self.encode_prompt(prompts),
                          negative_prompt_embeds=self.encode_prompt(negatives),
                          num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                          height=height, width=width, generator=generator,
                          output_type=output_type).images
        return ImagePipelineOutput(images=images)
