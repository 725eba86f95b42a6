"""The LaVi-Bridge model: frozen LM + LoRA -> text adapter -> frozen diffusion model + LoRA."""
import inspect
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import AutoencoderKL
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.training_utils import cast_training_params
from diffusers.utils import SAFETENSORS_WEIGHTS_NAME
from mmengine.logging import print_log
from mmengine.model import BaseModel
from peft import LoraConfig
from PIL import Image

from diffengine.constants import BRIDGE_MANIFEST
from diffengine.contracts import TEXT_KEY
from diffengine.precision import AUTO, TORCH_DTYPES, weight_dtype_name
from diffengine.registry import MODELS
from diffengine.version import __version__

from ...data_preprocessor import DiffusionDataPreprocessor
from ...eval_mode import eval_mode
from ...generated_images import finite_pil_images
from ...language import (
    LanguageModel,
    check_caption_dropout,
    check_pad_token,
    checked_language_model_config,
    drop_captions,
    hidden_width,
)
from ...lora import (
    LORA_WEIGHTS,
    inject_lora,
    load_lora_weights,
    lora_layers,
    save_lora,
    set_lora_input_casting,
    update_rank_limit,
)
from ...losses import TrainingObjective, training_objective
from ...model_fingerprint import differing_weights, weights_fingerprints
from ...model_paths import language_model_location, looks_local, vision_model_location
from ...vision import (
    SizeConditioning,
    TextConditioning,
    VisionFamily,
    batch_latents,
    drop_vae_encoder,
    find_vision_family,
    image_side_multiple,
    vae_scale_factor,
)
from ...weights_file import load_checked_safetensors
from .pipeline import LaViBridgePipeline
from .text_adapter import LaViBridgeTextAdapter, adapter_dims

# the bridge.json entry of weights_fingerprints of the base models it was trained on
BASE_FINGERPRINTS = "base_fingerprints"


def lora_settings(cfg: dict | None, side: str) -> dict:
    """The paper's LoRA (rank 32, scale 1 as alpha = rank, dropout 0.1) updated by ``cfg``."""
    settings = {"rank": 32, "alpha": None, "dropout": 0.1, **(cfg or {})}
    unknown = set(settings) - {"rank", "alpha", "dropout"}
    if unknown:
        raise ValueError(f"{side} takes rank, alpha and dropout; unknown: {', '.join(sorted(unknown))}")
    rank = settings["rank"]
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 0:
        raise ValueError(f"{side}.rank must be an integer >= 0 (0: no LoRA), got {rank!r}")
    alpha, dropout = settings["alpha"], settings["dropout"]
    # alpha 0 scales the LoRA's update to nothing: it would train on and change nothing (without
    # LoRA, rank 0, alpha means nothing: a bridge of rank 0 records alpha 0)
    if rank and alpha is not None and (isinstance(alpha, bool) or not isinstance(alpha, int | float)
                                       or not 0 < alpha < math.inf):
        raise ValueError(f"{side}.alpha must be a number > 0 (None: the rank, a scale of 1), got {alpha!r}")
    if isinstance(dropout, bool) or not isinstance(dropout, int | float) or not 0 <= dropout < 1:
        raise ValueError(f"{side}.dropout must be a number from 0 to below 1, got {dropout!r}")
    if alpha is None:
        settings["alpha"] = rank
    return settings


def _inject_lora_unless_rank_0(model: torch.nn.Module, target_classes: tuple[str, ...],
                               settings: dict, side: str) -> LoraConfig | None:
    """Inject LoRA with ``lora_settings``; rank 0 means none (the paper's adapter-only ablation)."""
    rank = settings["rank"]
    if rank == 0:
        return None
    config = inject_lora(model, target_classes, **settings)
    limits = [update_rank_limit(layer.get_base_layer()) for _, layer in lora_layers(model)]
    narrow = [limit for limit in limits if limit < rank]
    if narrow:
        # an update of a layer with m inputs or outputs has rank <= m whatever r is: the ranks
        # above it cost memory and time and change nothing the layer can learn
        print_log(f"{side}.rank={rank} is above what {len(narrow)} of its {len(limits)} LoRA layers can "
                  f"use (an update's rank is at most min(inputs, outputs), {min(narrow)} for the "
                  f"narrowest): the extra ranks add cost, not capacity", logger="current",
                  level=logging.WARNING)
    return config


@dataclass(frozen=True)
class CheckedBridgeArguments:
    """What ``LaViBridge``'s arguments resolve to, found from the models' configs before any weights load."""

    text_encoder: str
    vision_model: str
    weight_dtype: str
    text_lora: dict
    vision_lora: dict
    adapter: dict
    objective: TrainingObjective
    vision_family: VisionFamily
    weight_settings: dict
    base_fingerprints: dict


def _check_compile_options(options: dict) -> None:
    """The ``torch.compile`` arguments of ``torch_compile=dict(...)``, checked as torch.compile checks
    them, but before the weights load rather than after."""
    accepted = sorted(set(inspect.signature(torch.compile).parameters) - {"model"})
    for key in options:
        if key not in accepted:
            raise ValueError(f"torch_compile.{key}: torch.compile has no option {key!r}; it takes "
                             f"{', '.join(accepted)}")
    mode = options.get("mode")
    if mode is not None and options.get("options") is not None:
        raise ValueError("torch_compile: give mode or options, not both (torch.compile takes one of them)")
    if mode is not None and options.get("backend", "inductor") == "inductor":
        from torch._inductor import list_mode_options

        modes = list(list_mode_options())
        if mode not in modes:
            raise ValueError(f"torch_compile.mode must be one of {', '.join(modes)}, got {mode!r}")


def _checked_arguments(text_encoder: str, vision_model: str, adapter: dict | None, *, max_length: int,
                       hidden_layer: int, text_attention_mask: bool, pad_token: str | None,
                       text_lora: dict | None, vision_lora: dict | None, prediction_type: str | None,
                       snr_gamma: float | None, flow_matching: dict | None, caption_dropout: float,
                       weight_dtype: str, torch_compile: bool | dict, bridge_path: str | None,
                       warn: bool) -> CheckedBridgeArguments:
    """Every check of ``LaViBridge``'s arguments: model folders and configs are read, no weights
    (seconds, where loading a 7B LM takes minutes). ``warn``: log what a ``bridge_path`` differs in."""
    if weight_dtype not in (*TORCH_DTYPES, AUTO):
        raise ValueError(f"weight_dtype must be one of {', '.join(TORCH_DTYPES)} or {AUTO}, got {weight_dtype!r}")
    if not isinstance(torch_compile, bool | dict):
        raise ValueError(f"torch_compile must be True, False or a dict of torch.compile options, got "
                         f"{torch_compile!r}")
    if isinstance(torch_compile, dict):
        _check_compile_options(torch_compile)
    check_caption_dropout(caption_dropout)
    text_lora, vision_lora = lora_settings(text_lora, "text_lora"), lora_settings(vision_lora, "vision_lora")
    text_encoder = language_model_location(text_encoder)
    vision_model = vision_model_location(vision_model)
    objective = training_objective(vision_model, prediction_type, snr_gamma, flow_matching)
    weight_settings = {
        "hidden_layer": hidden_layer, "text_attention_mask": text_attention_mask,
        "pad_token": pad_token, "prediction_type": objective.record().get("prediction_type"),
        # without LoRA (rank 0) its alpha means nothing
        **{side: {"rank": lora["rank"], "alpha": lora["alpha"]} if lora["rank"] else {"rank": 0}
           for side, lora in (("text_lora", text_lora), ("vision_lora", vision_lora))}}
    base_models = {"text_encoder": text_encoder, "vision_model": vision_model}
    base_fingerprints = {role: weights_fingerprints(location, role) for role, location in base_models.items()}
    if bridge_path is not None:
        check_bridge_settings(bridge_path, weight_settings, base_models, max_length, warn=warn,
                              base_fingerprints=base_fingerprints)
    vision_family = find_vision_family(vision_model)
    lm_config = checked_language_model_config(text_encoder, max_length, hidden_layer)
    adapter = _adapter_dims(adapter or {}, hidden_width(lm_config), text_encoder, vision_model, vision_family)
    if bridge_path is not None:
        _check_bridge_fits(Path(bridge_path), adapter, [side for side, lora in (("text_lora", text_lora),
                                                                                 ("vision_lora", vision_lora))
                                                       if lora["rank"]])
    return CheckedBridgeArguments(text_encoder, vision_model, weight_dtype_name(weight_dtype), text_lora,
                                  vision_lora, adapter, objective, vision_family, weight_settings,
                                  base_fingerprints)


def _check_bridge_fits(directory: Path, adapter: dict, lora_sides: list[str]) -> None:
    """The files a ``bridge_path`` must hold, and its adapter's widths (from ``adapter/config.json``)
    against this model's, before any base model loads: else its weights would not load into it."""
    check_bridge_files(directory, lora_sides)
    saved = LaViBridgeTextAdapter.load_config(directory / "adapter")
    for key in ("in_dim", "int_dim", "out_dim", "pooled_dim"):
        if saved.get(key) != adapter.get(key):
            raise ValueError(f"{directory} has an adapter of {key}={saved.get(key)}, this model's has {key}="
                             f"{adapter.get(key)}: set model.adapter.{key}={saved.get(key)} to continue that "
                             "bridge (or leave model.bridge_path unset to start a new one)")


def _adapter_dims(adapter: dict, lm_width: int, text_encoder: str, vision_model: str,
                  vision_family: VisionFamily) -> dict:
    """The adapter's dims, defaults filled in by the paper's rule and given ones checked against the
    language model's width and the denoiser's context (and pooled) width."""
    accepted = sorted(set(inspect.signature(LaViBridgeTextAdapter.__init__).parameters) - {"self"})
    for key in adapter:
        if key not in accepted:
            raise ValueError(f"adapter.{key}: LaViBridgeTextAdapter has no option {key!r}; it takes "
                             f"{', '.join(accepted)}")
    denoiser_config = vision_family.denoiser_config(vision_model)
    context_dim = denoiser_config.get(vision_family.context_dim_key)
    if context_dim is None:
        raise ValueError(f"{vision_model}'s denoiser has no {vision_family.context_dim_key}: it is not "
                         "text-conditioned")
    dims = adapter_dims(lm_width, context_dim, adapter)
    if dims["in_dim"] != lm_width:
        raise ValueError(f"adapter in_dim={dims['in_dim']} does not match the language model's hidden size "
                         f"{lm_width} ({text_encoder})")
    if dims["out_dim"] != context_dim:
        raise ValueError(f"adapter out_dim={dims['out_dim']} does not match the vision model's "
                         f"{vision_family.context_dim_key}={context_dim} ({vision_model})")
    pooled_dim = vision_family.pooled_dim(denoiser_config)
    if dims.setdefault("pooled_dim", pooled_dim) != pooled_dim:
        raise ValueError(f"adapter pooled_dim={dims['pooled_dim']} does not match the pooled text "
                         f"width {pooled_dim} the vision model takes ({vision_model})")
    if pooled_dim is None:  # no pooled head: the adapter (and its manifest entry) of the paper
        del dims["pooled_dim"]
    return dims


@MODELS.register_module()
class LaViBridge(BaseModel):
    """LaVi-Bridge (Zhao et al., ECCV 2024): any language model to any supported denoiser.

    Args:
        text_encoder: hub id or local path of the language model (and its tokenizer).
        vision_model: hub id or local path of a diffusers base model folder holding the
            denoiser (``unet/`` or ``transformer/``, see ``VISION_FAMILIES``), ``vae/`` and
            ``scheduler/`` (SD1.5 by default in the configs). The denoiser is the attribute named
            like its subfolder (``model.unet``, ``model.transformer``), also ``model.denoiser``.
        adapter: ``dict(in_dim, int_dim, out_dim[, pooled_dim])``; missing dims default to the LM
            hidden size, ``(in + out) // 2`` (the rule behind the paper's 896/2432/2560), the vision
            context width and the pooled text width the denoiser takes (SDXL: 1280; none for SD1.5
            and PixArt, which have no pooled head).
        max_length: tokenizer max length (77 for SD1.x, 120 for PixArt).
        hidden_layer: which LM hidden layer to bridge (-1: the final normed one).
        text_attention_mask: pass the padding mask to the LM (the paper's UNet runs do not, its
            PixArt run does; a PixArt transformer always gets the mask).
        pad_token: a vocabulary token to pad with instead of the tokenizer's own (None: its own,
            else its eos or unk token).
        text_lora, vision_lora: ``dict(rank, alpha, dropout)``; alpha defaults to rank (scale 1);
            ``rank=0`` trains without LoRA on that side (adapter only when both are 0).
        prediction_type: ``epsilon`` or ``v_prediction``; None keeps the scheduler's (the
            bridge records the one it trained with). DDPM schedules only.
        snr_gamma: min-SNR-gamma loss weighting; None for plain MSE. DDPM schedules only.
        flow_matching: for base models that train by flow matching (SD3, Flux: their
            ``scheduler/`` is a ``FlowMatchEulerDiscreteScheduler``), ``dict(weighting_scheme,
            logit_mean, logit_std, mode_scale)`` of ``FlowMatchingObjective``; None: its defaults
            (SD3's logit-normal timesteps). The bridge records the resolved options.
        caption_dropout: probability of replacing a caption with "" (for classifier-free guidance).
        weight_dtype: dtype of the frozen weights (``float32``/``bfloat16``/``float16``, or ``auto``:
            bfloat16 on a GPU that has it, float16 on an older one, float32 on a CPU; the bridge
            records the one chosen); LoRA and adapter always train in float32.
        gradient_checkpointing: recompute denoiser and LM activations in the backward pass.
        vae_encoder: keep the VAE's encoder; ``False`` frees it after loading, for training from
            latent shards (``diffengine prep-latents``) only. The decoder stays (sampling needs it).
        channels_last: store the denoiser's and VAE's convolution weights channels-last (NHWC),
            the layout GPU tensor cores convolve fastest; a convolution with such weights runs,
            and returns its output, in that layout whatever its input's.
        torch_compile: ``torch.compile`` the denoiser and the language model in place (``True``, or
            a dict of ``torch.compile`` arguments such as ``dict(mode="max-autotune")``).
            ``channels_last`` and ``torch_compile`` change speed, not results: ``bridge_config``
            records neither, so a bridge loads for inference and export in the plain layout.
        bridge_path: a bridge folder (see ``save_bridge``) to start from.

    Local model folders are recorded as absolute paths; ``bridge_config`` holds every argument
    (resolved: adapter dims, LoRA alpha, prediction type), and ``save_bridge`` writes it.
    """

    def __init__(self, text_encoder: str, vision_model: str, adapter: dict | None = None,
                 max_length: int = 77, hidden_layer: int = -1, text_attention_mask: bool = False,
                 pad_token: str | None = None, text_lora: dict | None = None, vision_lora: dict | None = None,
                 prediction_type: str | None = None, snr_gamma: float | None = None,
                 flow_matching: dict | None = None, caption_dropout: float = 0.0, weight_dtype: str = "float32",
                 gradient_checkpointing: bool = False, vae_encoder: bool = True,
                 channels_last: bool = False, torch_compile: bool | dict = False,
                 bridge_path: str | None = None, data_preprocessor: dict | None = None):
        super().__init__(data_preprocessor=data_preprocessor or DiffusionDataPreprocessor())
        checked = _checked_arguments(
            text_encoder, vision_model, adapter, max_length=max_length, hidden_layer=hidden_layer,
            text_attention_mask=text_attention_mask, pad_token=pad_token, text_lora=text_lora,
            vision_lora=vision_lora, prediction_type=prediction_type, snr_gamma=snr_gamma,
            flow_matching=flow_matching, caption_dropout=caption_dropout, weight_dtype=weight_dtype,
            torch_compile=torch_compile, bridge_path=bridge_path, warn=True)
        text_encoder, vision_model = checked.text_encoder, checked.vision_model
        text_lora, vision_lora, adapter = checked.text_lora, checked.vision_lora, checked.adapter
        weight_dtype = checked.weight_dtype
        self.text_encoder_path = text_encoder
        self.vision_model_path = vision_model
        self.weight_dtype = TORCH_DTYPES[weight_dtype]
        self.caption_dropout = caption_dropout
        self.objective = checked.objective
        self.weight_settings = checked.weight_settings
        self.base_models = {"text_encoder": text_encoder, "vision_model": vision_model}
        self.base_fingerprints = checked.base_fingerprints
        self.vision_family = checked.vision_family
        # frozen weights are loaded directly in weight_dtype: a 7B LM never exists in float32
        self.language = LanguageModel(text_encoder, max_length=max_length,
                                      hidden_layer=hidden_layer,
                                      use_attention_mask=text_attention_mask,
                                      dtype=self.weight_dtype, pad_token=pad_token)
        # registered under its subfolder's name, so checkpoint keys read "unet.*" / "transformer.*"
        self.add_module(self.vision_family.subfolder,
                        self.vision_family.load(vision_model, self.weight_dtype))
        self.vae = AutoencoderKL.from_pretrained(vision_model, subfolder="vae",
                                                 torch_dtype=self.weight_dtype)
        for frozen in (self.denoiser, self.vae):
            frozen.requires_grad_(False)
        if not vae_encoder:
            drop_vae_encoder(self.vae)
        if channels_last:
            for convolutional in (self.denoiser, self.vae):
                convolutional.to(memory_format=torch.channels_last)

        self.adapter = LaViBridgeTextAdapter(**adapter)

        self.text_lora_config = _inject_lora_unless_rank_0(
            self.language.model, self.language.family.lora_target_classes, text_lora, "text_lora")
        self.vision_lora_config = _inject_lora_unless_rank_0(
            self.denoiser, self.vision_family.lora_target_classes, vision_lora, "vision_lora")
        # LoRA layers are created in their base layer's dtype; train them in float32
        cast_training_params(self, dtype=torch.float32)
        self._lora_layers = [layer for _, layer in lora_layers(self)]
        self._lora_input_casting = True  # peft's default
        if gradient_checkpointing:
            self.denoiser.enable_gradient_checkpointing()
            # the name every supported transformers version has (5.x also offers a new one)
            self.language.model.gradient_checkpointing_enable(
                gradient_checkpointing_kwargs={"use_reentrant": False})
        self.bridge_config = {
            "text_encoder": text_encoder, "vision_model": vision_model, "adapter": adapter,
            "max_length": max_length, "hidden_layer": hidden_layer,
            "text_attention_mask": text_attention_mask, "pad_token": pad_token,
            "text_lora": text_lora, "vision_lora": vision_lora,
            "prediction_type": None, "snr_gamma": None, "flow_matching": None, **self.objective.record(),
            "caption_dropout": caption_dropout, "weight_dtype": weight_dtype,
            "gradient_checkpointing": gradient_checkpointing, "vae_encoder": vae_encoder,
        }
        # the image side the bridge is trained at (set by BridgeCheckpointHook, read from a bridge):
        # its samples default to it, not to the denoiser's native size (SDXL trained at 512 px)
        self.trained_resolution: int | None = None
        if bridge_path is not None:
            self.load_bridge(bridge_path)
        if torch_compile:
            # in place (nn.Module.compile): parameter names, checkpoints and LoRA saving are unchanged
            options = {} if torch_compile is True else dict(torch_compile)
            for module in (self.denoiser, self.language.model):
                module.compile(**options)

        # checkpoints hold only what training changes: the LoRA and adapter parameters
        self._trainable_keys = frozenset(n for n, p in self.named_parameters() if p.requires_grad)
        self.register_state_dict_post_hook(_drop_frozen_from_state_dict)
        self.register_load_state_dict_post_hook(_ignore_missing_frozen_keys)

    @classmethod
    def check_arguments(cls, **arguments) -> None:
        """Check what ``LaViBridge(**arguments)`` would be built from, reading no weights (seconds):
        ``diffengine train`` runs it before any runner or worker process starts."""
        bound = inspect.signature(cls).bind(**arguments)
        bound.apply_defaults()
        names = [name for name in inspect.signature(_checked_arguments).parameters if name != "warn"]
        _checked_arguments(**{name: bound.arguments[name] for name in names}, warn=False)
        if bound.arguments["pad_token"] is not None:  # the tokenizer only: seconds
            check_pad_token(language_model_location(bound.arguments["text_encoder"]), bound.arguments["pad_token"])

    @classmethod
    def image_side_multiple(cls, vision_model: str) -> int:
        """What the sides of training images must be a multiple of, in pixels, for ``vision_model``:
        its denoiser's latent patch times its VAE's scale (read from the configs, no weights)."""
        return image_side_multiple(vision_model_location(vision_model))

    @property
    def denoiser(self) -> torch.nn.Module:
        """The vision model's denoiser (``unet`` or ``transformer``), whatever its family."""
        return getattr(self, self.vision_family.subfolder)

    @property
    def noise_scheduler(self) -> SchedulerMixin:
        """The base model's training schedule (inference samplers are built from its config)."""
        return self.objective.scheduler

    @property
    def device(self) -> torch.device:
        """Device of the trainable weights."""
        return next(self.adapter.parameters()).device

    def parameter_groups(self) -> dict[str, list[torch.nn.Parameter]]:
        """Trainable parameters by optimizer group: vision LoRA, text LoRA, adapter."""
        return {
            "vision_lora": [p for p in self.denoiser.parameters() if p.requires_grad],
            "text_lora": [p for p in self.language.model.parameters() if p.requires_grad],
            "adapter": list(self.adapter.parameters()),
        }

    def encode_text(self, texts: list[str]) -> TextConditioning:
        """Prompts -> LM hidden states -> adapter: the vision model's context, padding mask and
        (with a pooled head) pooled embedding."""
        input_ids, attention_mask = self.language.tokenize(texts, self.device)
        hidden = self.language(input_ids, attention_mask)
        return self.adapter.conditioning(hidden, attention_mask, self.weight_dtype)

    def forward(self, inputs: dict, data_samples: dict | None = None, mode: str = "loss") -> dict:
        """Training loss for a batch ``{"pixel_values": (B,3,H,W) in [-1,1], "text": [str]}``.

        A batch of latent shards holds ``latent_parameters`` (the VAE's ``latent_dist.parameters``,
        (B,2C,h,w)) instead of pixels: the latents are sampled from them as from an encoded image.
        The loader's ``original_size`` and ``crop_top_left`` ((B,2) ints), where present, go to
        the denoiser's family with the trained size (latent size x VAE scale) as its target size.
        """
        if mode != "loss":
            raise NotImplementedError(f"LaViBridge.forward supports mode='loss' only, got '{mode}'; "
                                      "use infer() to generate images")
        self._match_lora_input_casting_to_autocast()
        latents = batch_latents(self.vae, inputs)
        self._check_latent_size(latents)
        noised = self.objective.noised(latents)
        self.language.warn_truncated_captions(inputs[TEXT_KEY])
        text = self.encode_text(drop_captions(inputs[TEXT_KEY], self.caption_dropout))
        scale = vae_scale_factor(self.vae.config)
        sizes = SizeConditioning.of_batch(inputs, tuple(scale * n for n in latents.shape[-2:]))
        model_pred = self.vision_family.predict(self.denoiser, noised.noisy.to(self.weight_dtype),
                                                noised.timesteps, text, sizes)
        return {"loss": self.objective.loss(model_pred, noised)}

    def _match_lora_input_casting_to_autocast(self) -> None:
        """LoRA inputs stay in the autocast dtype under autocast (``set_lora_input_casting``).

        Set at each entry (training step, inference) and kept until the next one, so that gradient
        checkpointing recomputes the forward pass in backward with the same casts.
        """
        casting = not torch.is_autocast_enabled(self.device.type)
        if casting != self._lora_input_casting:
            set_lora_input_casting(self._lora_layers, casting)
            self._lora_input_casting = casting

    def _check_latent_size(self, latents: torch.Tensor) -> None:
        """A one-line error for an image size the denoiser cannot patch (rather than a shape error deep inside)."""
        scale = vae_scale_factor(self.vae.config)
        multiple = self.vision_family.pixel_multiple(self.denoiser.config, self.vae.config)
        pixels = [side * scale for side in latents.shape[-2:]]
        if any(side % multiple for side in pixels):
            raise ValueError(f"{self.vision_family.model_class} takes images whose sides are multiples of "
                             f"{multiple} px ({multiple // scale}-latent patches, VAE scale {scale}), got "
                             f"{' x '.join(map(str, pixels))} px: set train_dataloader.resolution to a "
                             f"multiple of {multiple}")

    @torch.no_grad()
    def infer(self, prompts: list[str] | str, negative_prompt: str = "",
              num_inference_steps: int = 50, guidance_scale: float = 7.5,
              height: int | None = None, width: int | None = None, seed: int | None = 0,
              scheduler: str | None = None, output_type: str = "pil",
              show_progress: bool = False) -> list[Image.Image]:
        """Generate one image per prompt with classifier-free guidance (via ``LaViBridgePipeline``).

        The unconditional embedding goes through the same LM + adapter as the prompt; the
        generator is seeded on the model's device, so the same seed gives the same image. PIL
        images are refused (``NonFiniteImagesError``) when a pixel is not finite.
        """
        self._match_lora_input_casting_to_autocast()
        pipeline = LaViBridgePipeline.from_model(self, scheduler)
        pipeline.set_progress_bar_config(disable=not show_progress)
        with eval_mode(self):
            images = pipeline(prompts, negative_prompt=negative_prompt,
                              num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                              height=height, width=width, seed=seed,
                              output_type="np" if output_type == "pil" else output_type).images
        return finite_pil_images(images) if output_type == "pil" else images

    def _lora_sides(self) -> tuple[tuple[str, torch.nn.Module, LoraConfig | None], ...]:
        """(bridge folder name, model, LoRA config or None) of the language and vision sides."""
        return (("text_lora", self.language.model, self.text_lora_config),
                ("vision_lora", self.denoiser, self.vision_lora_config))

    def save_bridge(self, directory: str | Path, **manifest) -> Path:
        """Write the trainable part as a self-contained bridge folder (safetensors + peft configs)."""
        directory = Path(directory)
        for name, model, config in self._lora_sides():
            if config is not None:  # no LoRA on this side: no folder, and from_bridge reads rank 0
                save_lora(model, directory / name)
        self.adapter.save_pretrained(directory / "adapter", safe_serialization=True)
        trained = {} if self.trained_resolution is None else {"resolution": self.trained_resolution}
        manifest = {**self.bridge_config, **trained, BASE_FINGERPRINTS: self.base_fingerprints,
                    "diffengine_version": __version__, **manifest}
        (directory / BRIDGE_MANIFEST).write_text(json.dumps(manifest, indent=2))
        return directory

    @classmethod
    def from_bridge(cls, directory: str | Path, **overrides) -> "LaViBridge":
        """Build the model a bridge folder describes (every argument from its manifest) and load it.

        ``overrides`` replace constructor arguments, e.g. ``text_encoder=`` a local copy of the
        base LM or ``weight_dtype="bfloat16"``. Bridges written before the manifest held every
        argument take their LoRA and adapter settings from those folders, the rest from the
        constructor's defaults (as they were trained).
        """
        directory = Path(directory)
        manifest = read_bridge_manifest(directory)
        arguments = set(inspect.signature(cls).parameters) - {"bridge_path", "data_preprocessor"}
        kwargs = {name: value for name, value in manifest.items() if name in arguments}
        for name in ("text_lora", "vision_lora"):
            if name not in kwargs:
                config = (LoraConfig.from_pretrained(directory / name) if (directory / name).is_dir()
                          else None)
                kwargs[name] = ({"rank": config.r, "alpha": config.lora_alpha, "dropout": config.lora_dropout}
                                if config else {"rank": 0})
        check_bridge_files(directory, [name for name in ("text_lora", "vision_lora")
                                       if (kwargs[name] or {}).get("rank", 0)])
        if "adapter" not in kwargs:
            adapter = LaViBridgeTextAdapter.load_config(directory / "adapter")
            kwargs["adapter"] = {k: adapter[k] for k in ("in_dim", "int_dim", "out_dim")}
        kwargs.update(overrides)
        for role, option in (("text_encoder", "--text-encoder"), ("vision_model", "--vision-model")):
            path = kwargs[role]
            if role not in overrides and looks_local(path) and not Path(path).expanduser().exists():
                raise FileNotFoundError(f"{directory / BRIDGE_MANIFEST} records {role} {path!r}, which "
                                        f"does not exist here: pass {role}= ({option} PATH for infer, "
                                        "export and eval) with the same base model")
        return cls(bridge_path=str(directory), **kwargs)

    def load_bridge(self, directory: str | Path) -> None:
        """Load LoRA and adapter weights from a bridge folder written by ``save_bridge``."""
        directory = Path(directory)
        self.trained_resolution = read_bridge_manifest(directory).get("resolution")
        for name, model, config in self._lora_sides():
            saved = (LoraConfig.from_pretrained(directory / name) if (directory / name).is_dir()
                     else None)
            (saved_r, saved_alpha), (r, alpha) = ((c.r, c.lora_alpha) if c else (0, None)
                                                  for c in (saved, config))
            if (saved_r, saved_alpha) != (r, alpha):
                raise ValueError(f"{directory / name} has LoRA rank {saved_r} alpha {saved_alpha}, "
                                 f"this model rank {r} alpha {alpha} (rank 0: no LoRA)")
            if config is not None:
                load_lora_weights(model, directory / name)
        adapter_file = directory / "adapter" / SAFETENSORS_WEIGHTS_NAME
        try:
            self.adapter.load_state_dict(load_checked_safetensors(adapter_file))
        except RuntimeError as error:  # torch's size-mismatch report
            raise ValueError(f"{adapter_file} does not fit this model's adapter: {error}") from None


def read_bridge_manifest(directory: str | Path) -> dict:
    """The settings a bridge folder was trained with (its ``bridge.json``)."""
    manifest_path = Path(directory) / BRIDGE_MANIFEST
    if not manifest_path.is_file():
        raise FileNotFoundError(f"{directory} is not a bridge folder (no {BRIDGE_MANIFEST})")
    try:
        return json.loads(manifest_path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{manifest_path} is not valid JSON: {error}") from None


def check_bridge_files(directory: Path, lora_sides: list[str]) -> None:
    """Raise FileNotFoundError naming every file a bridge folder lacks, before any base model loads:
    ``adapter/`` and a peft folder per side with LoRA (``lora_sides``)."""
    expected = [Path("adapter") / "config.json", Path("adapter") / SAFETENSORS_WEIGHTS_NAME,
                *(Path(side) / name for side in lora_sides for name in ("adapter_config.json", LORA_WEIGHTS))]
    missing = [str(path) for path in expected if not (directory / path).is_file()]
    if missing:
        raise FileNotFoundError(f"bridge folder {directory} lacks {', '.join(missing)}: it was not "
                                "written whole (or its files were moved)")


def check_weight_settings(recorded: dict, settings: dict, where: str) -> None:
    """Raise ValueError naming ``where`` (a bridge manifest, a checkpoint) when ``recorded`` holds
    another value of one of ``settings`` (``LaViBridge.weight_settings``); what it lacks is not compared."""
    for name, value in settings.items():
        trained = recorded.get(name)
        if isinstance(value, dict) and isinstance(trained, dict):  # LoRA: rank and alpha, not dropout
            trained = {key: trained.get(key) for key in value}
        if name in recorded and trained != value:
            raise ValueError(f"{where} was trained with {name}={trained!r}, this model has "
                             f"{name}={value!r}: set model.{name}={trained!r} to continue that bridge")


def check_bridge_settings(directory: str | Path, settings: dict, base_models: dict,
                          max_length: int | None = None, warn: bool = True,
                          base_fingerprints: dict | None = None) -> None:
    """Raise ValueError where the bridge in ``directory`` was trained under other ``settings``;
    warn where it was trained on other ``base_models`` (by the fingerprints of their weights files,
    ``base_fingerprints``, where both it and this model have them; by path otherwise), or with
    captions cut or padded to another ``max_length`` (its weights mean the same, but the denoiser
    learned a context of that length: without the text mask, another number of pad tokens).

    The settings decide what the LoRA and adapter weights mean (which states the adapter reads,
    what the denoiser predicts, the LoRA's rank and scale): training it further under others would
    silently start another bridge, or fail only once every model has loaded. A base model at
    another path may be a copy of the same one (silent where the fingerprints say so), and one at
    the same path may have been replaced; a model of the same shape that is not the same one loads
    without error and learns anew, so each is a warning.
    What a bridge's manifest does not record (older or converted bridges) is not compared.
    """
    manifest_path = Path(directory) / BRIDGE_MANIFEST
    manifest = read_bridge_manifest(directory)
    check_weight_settings(manifest, settings, str(manifest_path))
    if not warn:
        return
    recorded_fingerprints = manifest.get(BASE_FINGERPRINTS) or {}
    for name, value in base_models.items():
        recorded, current = recorded_fingerprints.get(name), (base_fingerprints or {}).get(name)
        differing = differing_weights(recorded, current) if recorded and current else None
        if differing:
            print_log(f"{manifest_path} was trained with {name} {manifest.get(name)}, whose weights differ from "
                      f"those of {value} loaded here ({', '.join(differing)}): its weights fit only the base "
                      "model they were trained with", logger="current", level=logging.WARNING)
        if differing is not None:
            continue
        if name in manifest and manifest[name] != value:
            print_log(f"{manifest_path} was trained with {name} {manifest[name]}, loaded here with {value}: "
                      "its weights fit only the base model they were trained with", logger="current",
                      level=logging.WARNING)
    if max_length is not None and manifest.get("max_length", max_length) != max_length:
        print_log(f"{manifest_path} was trained with max_length={manifest['max_length']}, continued here with "
                  f"max_length={max_length}: captions are cut or padded to another length than the bridge "
                  f"learned (model.max_length={manifest['max_length']} keeps it)", logger="current",
                  level=logging.WARNING)


def _drop_frozen_from_state_dict(module: LaViBridge, state_dict: dict, prefix: str, _) -> None:
    for key in [k for k in state_dict if k.startswith(prefix)]:
        if key[len(prefix):] not in module._trainable_keys:
            del state_dict[key]


def _ignore_missing_frozen_keys(module: LaViBridge, incompatible_keys) -> None:
    missing = incompatible_keys.missing_keys
    missing[:] = [k for k in missing if k.removeprefix("module.") in module._trainable_keys]
