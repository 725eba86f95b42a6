"""Plain full training of a latent text-to-image model, the way Stable Diffusion was trained."""
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DiffusionPipeline
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from mmengine.model import BaseModel
from PIL import Image
from transformers import AutoConfig

from diffengine.contracts import TEXT_KEY
from diffengine.registry import MODELS

from ...data_preprocessor import DiffusionDataPreprocessor
from ...eval_mode import eval_mode
from ...generated_images import finite_pil_images
from ...language import LanguageModel, check_caption_dropout, drop_captions, hidden_width
from ...losses import training_objective
from ...model_paths import language_model_location, vision_model_location
from ...vision import UNetFamily, batch_latents, find_vision_family, inference_scheduler
from ...vision.families import diffusers_pipeline_class


@MODELS.register_module()
class StableDiffusion(BaseModel):
    """A UNet and its own text encoder trained together on captioned images; the VAE is frozen.

    Args:
        text_encoder: path (or hub id) of a transformers encoder and its tokenizer, e.g. a small
            ``BertModel`` or ``CLIPTextModel`` (its last hidden state conditions the UNet).
        tokenizer: where the tokenizer is, when not beside the text encoder.
        vision_model: a diffusers base-model folder with ``unet/`` (an SD-style
            ``UNet2DConditionModel``), ``vae/`` (trained already, e.g. by
            ``AutoencoderKLTrainer``) and ``scheduler/`` (the training noise schedule).
        max_length: tokenizer max length; saved as the tokenizer's ``model_max_length``.
        train_text_encoder: train the text encoder with the UNet (False: keep it frozen, as SD
            kept CLIP).
        prediction_type: ``epsilon`` or ``v_prediction``; None keeps the scheduler's.
        snr_gamma: min-SNR-gamma loss weighting; None for plain MSE.
        caption_dropout: probability of replacing a caption with "" (for classifier-free guidance).

    ``save_pretrained`` writes a ``StableDiffusionPipeline`` folder, which diffusers loads as it is
    and ``LaViBridge`` accepts as ``vision_model``.
    """

    def __init__(self, text_encoder: str, vision_model: str, tokenizer: str | None = None,
                 max_length: int = 77, train_text_encoder: bool = True, prediction_type: str | None = None,
                 snr_gamma: float | None = None, caption_dropout: float = 0.0,
                 data_preprocessor: dict | None = None):
        super().__init__(data_preprocessor=data_preprocessor or DiffusionDataPreprocessor())
        check_caption_dropout(caption_dropout)
        text_encoder = language_model_location(text_encoder)
        vision_model = vision_model_location(vision_model)
        family = find_vision_family(vision_model)
        if not isinstance(family, UNetFamily):
            raise ValueError(f"{vision_model}: StableDiffusion trains SD-style UNets "
                             f"(unet/), not {type(family).__name__}'s {family.model_class}")
        # read before any weights load: a bad prediction_type fails in a second, not after minutes
        self.objective = training_objective(vision_model, prediction_type, snr_gamma)
        context_dim = family.denoiser_config(vision_model)["cross_attention_dim"]
        text_width = hidden_width(AutoConfig.from_pretrained(text_encoder))
        if context_dim != text_width:
            raise ValueError(f"the UNet's cross_attention_dim {context_dim} does not match the text "
                             f"encoder's hidden size {text_width} ({text_encoder})")
        # loaded frozen like a bridge's LM; trained fully when train_text_encoder
        self.language = LanguageModel(text_encoder, max_length=max_length, tokenizer=tokenizer)
        self.language.model.requires_grad_(train_text_encoder)
        self.unet = family.load(vision_model, torch.float32)
        self.vae = AutoencoderKL.from_pretrained(vision_model, subfolder="vae").requires_grad_(False)
        self.caption_dropout = caption_dropout

    @classmethod
    def from_pretrained(cls, directory: str | Path, **overrides) -> "StableDiffusion":
        """The model of a ``StableDiffusionPipeline`` folder (as ``save_pretrained`` writes one)."""
        directory = Path(directory)
        if not (directory / "text_encoder").is_dir() or not (directory / "tokenizer").is_dir():
            raise FileNotFoundError(f"{directory} is not a Stable Diffusion folder with its own "
                                    "text_encoder/ and tokenizer/")
        from transformers import AutoTokenizer

        max_length = AutoTokenizer.from_pretrained(directory / "tokenizer").model_max_length
        kwargs = {"text_encoder": str(directory / "text_encoder"),
                  "tokenizer": str(directory / "tokenizer"), "vision_model": str(directory),
                  "max_length": max_length, **overrides}
        return cls(**kwargs)

    @property
    def noise_scheduler(self) -> SchedulerMixin:
        """The training schedule (``pipeline(scheduler=None)`` samples with it)."""
        return self.objective.scheduler

    @property
    def device(self) -> torch.device:
        """Device of the UNet."""
        return next(self.unet.parameters()).device

    def parameter_groups(self) -> dict[str, list[torch.nn.Parameter]]:
        """Trainable parameters by optimizer group: the UNet and the text encoder."""
        return {"unet": list(self.unet.parameters()),
                "text_encoder": [p for p in self.language.model.parameters() if p.requires_grad]}

    def forward(self, inputs: dict, data_samples: dict | None = None, mode: str = "loss") -> dict:
        """Training loss for a batch ``{"pixel_values": (B,3,H,W) in [-1,1], "text": [str]}``
        (or ``latent_parameters`` of latent shards instead of the pixels)."""
        if mode != "loss":
            raise NotImplementedError(f"StableDiffusion.forward supports mode='loss' only, got "
                                      f"'{mode}'; use infer() to generate images")
        latents = batch_latents(self.vae, inputs)
        noised = self.objective.noised(latents)
        self.language.warn_truncated_captions(inputs[TEXT_KEY])
        input_ids, mask = self.language.tokenize(drop_captions(inputs[TEXT_KEY], self.caption_dropout),
                                                 self.device)
        context = self.language(input_ids, mask)
        model_pred = self.unet(noised.noisy, noised.timesteps, encoder_hidden_states=context).sample
        return {"loss": self.objective.loss(model_pred, noised)}

    def pipeline(self, scheduler: str | None = None,
                 training_schedule: bool = False) -> DiffusionPipeline:
        """A ``StableDiffusionPipeline`` sharing this model's modules, sampling with ``scheduler``
        (None: unipc, see ``inference_scheduler``); ``training_schedule=True`` keeps the training
        schedule instead (what ``save_pretrained`` stores)."""
        tokenizer = self.language.tokenizer
        # the pipeline pads to model_max_length: the length the UNet was trained with
        tokenizer.model_max_length = self.language.max_length
        return diffusers_pipeline_class("StableDiffusionPipeline")(
            vae=self.vae, text_encoder=self.language.model, tokenizer=tokenizer, unet=self.unet,
            scheduler=(self.noise_scheduler if training_schedule
                       else inference_scheduler(scheduler, self.noise_scheduler.config)),
            safety_checker=None, feature_extractor=None, requires_safety_checker=False)

    @torch.no_grad()
    def infer(self, prompts: list[str] | str, negative_prompt: str = "",
              num_inference_steps: int = 50, guidance_scale: float = 7.5,
              height: int | None = None, width: int | None = None, seed: int | None = 0,
              scheduler: str | None = None, output_type: str = "pil",
              show_progress: bool = False) -> list[Image.Image]:
        """Generate one image per prompt with diffusers' ``StableDiffusionPipeline`` (UniPC by default);
        PIL images are refused (``NonFiniteImagesError``) when a pixel is not finite."""
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        pipeline = self.pipeline(scheduler)
        pipeline.set_progress_bar_config(disable=not show_progress)
        generator = None if seed is None else torch.Generator(self.device).manual_seed(seed)
        with eval_mode(self):
            images = pipeline(prompts, negative_prompt=[negative_prompt] * len(prompts),
                              num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                              height=height, width=width, generator=generator,
                              output_type="np" if output_type == "pil" else output_type).images
        return finite_pil_images(images) if output_type == "pil" else images

    def save_pretrained(self, directory: str | Path, **_) -> Path:
        """Write the model as a diffusers ``StableDiffusionPipeline`` folder (safetensors)."""
        self.pipeline(training_schedule=True).save_pretrained(directory, safe_serialization=True)
        return Path(directory)
