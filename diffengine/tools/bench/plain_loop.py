"""The paper's training step written directly in PyTorch.

The other side of ``bench cpu``'s comparison, and the paper's row of ``bench gpu``.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from diffengine.contracts import PIXELS_KEY, TEXT_KEY

from .models import adapter_dims, lora_settings

if TYPE_CHECKING:
    import torch

    from diffengine.models import LaViBridge


class PlainLoop:
    """The paper's training step written directly in PyTorch, diffusers, transformers and peft.

    T5 encoder + LoRA -> adapter MLP -> SD UNet + LoRA, frozen VAE: encode, noise, forward, MSE
    loss, backward, clip, AdamW step with one learning rate per part, constant schedule. Only the
    setup borrows from diffengine: the list of LoRA target layers (the paper's rule) and the
    adapter's module class (the paper's MLP). It reproduces ``LaViBridge.forward`` draw for draw
    (VAE sample, noise, timesteps, caption dropout), so one step from the same weights and random
    state gives the same update; the tests check that.
    """

    def __init__(self, text_encoder: str | Path, vision_model: str | Path, model_kwargs: dict,
                 optimizer: dict, group_lr: dict[str, float], clip_grad: dict | None,
                 device: str | torch.device = "cpu", weight_dtype: torch.dtype | None = None):
        import torch
        from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
        from peft import LoraConfig, inject_adapter_in_model
        from transformers import AutoTokenizer, T5EncoderModel

        from diffengine.models.editors.lavi_bridge.text_adapter import LaViBridgeTextAdapter
        from diffengine.models.language import LANGUAGE_FAMILIES
        from diffengine.models.lora import lora_target_names
        from diffengine.models.vision import VISION_FAMILIES

        unsupported = {key: model_kwargs[key] for key in ("hidden_layer", "text_attention_mask", "snr_gamma",
                                                          "prediction_type", "pad_token")
                       if model_kwargs.get(key) not in (None, -1, False)}
        if unsupported:
            raise ValueError(f"the plain loop is the paper's T5 + UNet step; it does not do {unsupported}")
        self.device = torch.device(device)
        self.weight_dtype = weight_dtype or torch.float32
        self.max_length = model_kwargs.get("max_length", 77)
        self.caption_dropout = model_kwargs.get("caption_dropout", 0.0)
        self.clip_grad = clip_grad
        self.tokenizer = AutoTokenizer.from_pretrained(text_encoder)
        self.text_encoder = T5EncoderModel.from_pretrained(text_encoder, dtype=self.weight_dtype)
        self.unet = UNet2DConditionModel.from_pretrained(vision_model, subfolder="unet",
                                                         torch_dtype=self.weight_dtype)
        self.vae = AutoencoderKL.from_pretrained(vision_model, subfolder="vae", torch_dtype=self.weight_dtype)
        self.scheduler = DDPMScheduler.from_pretrained(vision_model, subfolder="scheduler")
        for frozen in (self.text_encoder, self.unet, self.vae):
            frozen.requires_grad_(False)
        hidden, context = self.text_encoder.config.d_model, self.unet.config.cross_attention_dim
        self.adapter = LaViBridgeTextAdapter(**adapter_dims(hidden, context, model_kwargs))
        for model, classes, side in ((self.text_encoder, LANGUAGE_FAMILIES["t5"].lora_target_classes, "text_lora"),
                                     (self.unet, VISION_FAMILIES["sd_unet"].lora_target_classes, "vision_lora")):
            lora = lora_settings(model_kwargs, side)
            inject_adapter_in_model(LoraConfig(r=lora["rank"], lora_alpha=lora["alpha"] or lora["rank"],
                                               lora_dropout=lora["dropout"],
                                               target_modules=lora_target_names(model, classes)), model)
        for model in (self.text_encoder, self.unet, self.vae, self.adapter):
            model.to(self.device).train()
        self.groups = {"vision_lora": [p for p in self.unet.parameters() if p.requires_grad],
                       "text_lora": [p for p in self.text_encoder.parameters() if p.requires_grad],
                       "adapter": list(self.adapter.parameters())}
        for params in self.groups.values():  # LoRA trains in float32 on low-precision frozen weights
            for param in params:
                param.data = param.data.float()
        self.params = [p for params in self.groups.values() for p in params]
        self.optimizer = torch.optim.AdamW(
            [{"params": params, "lr": group_lr.get(name, optimizer.get("lr"))} for name, params in self.groups.items()],
            **optimizer)
        self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda _: 1.0)  # "constant"

    def copy_trainable_from(self, model: LaViBridge) -> None:
        """Start from ``model``'s LoRA and adapter weights (the same names on both sides)."""
        import torch

        pairs = ((self.text_encoder, model.language.model), (self.unet, model.denoiser), (self.adapter, model.adapter))
        with torch.no_grad():
            for mine, theirs in pairs:
                source = {name: p for name, p in theirs.named_parameters() if p.requires_grad}
                target = {name: p for name, p in mine.named_parameters() if p.requires_grad}
                if source.keys() != target.keys():
                    raise ValueError(f"{type(mine).__name__}: the plain loop's trainable weights differ from "
                                     f"diffengine's ({len(target)} vs {len(source)} tensors)")
                for name, param in target.items():
                    param.copy_(source[name])

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """LoRA and adapter weights by group-qualified name."""
        return {f"{part}.{name}": p.detach().clone() for part, model in
                (("text", self.text_encoder), ("unet", self.unet), ("adapter", self.adapter))
                for name, p in model.named_parameters() if p.requires_grad}

    def step(self, inputs: dict) -> None:
        """One training step on a batch ``{"pixel_values": uint8 (B,3,H,W), "text": [str]}``."""
        import torch
        import torch.nn.functional as F

        pixels = inputs[PIXELS_KEY].to(self.device).float().div_(127.5).sub_(1.0)
        with torch.no_grad():
            # contiguous: randn_like follows the memory layout, which CPU convolutions may make channels-last
            latents = (self.vae.encode(pixels.to(self.weight_dtype)).latent_dist.sample().float()
                       * self.vae.config.scaling_factor).contiguous()
        noise = torch.randn_like(latents)
        timesteps = torch.randint(0, self.scheduler.config.num_train_timesteps, (latents.shape[0],),
                                  device=self.device)
        noisy = self.scheduler.add_noise(latents, noise, timesteps)
        target = (self.scheduler.get_velocity(latents, noise, timesteps)
                  if self.scheduler.config.prediction_type == "v_prediction" else noise)
        texts = list(inputs[TEXT_KEY])
        if self.caption_dropout:
            keep = (torch.rand(len(texts)) >= self.caption_dropout).tolist()
            texts = [text if kept else "" for text, kept in zip(texts, keep, strict=True)]
        input_ids = self.tokenizer(texts, padding="max_length", max_length=self.max_length, truncation=True,
                                   padding_side="right", return_tensors="pt").input_ids.to(self.device)
        hidden = self.text_encoder(input_ids=input_ids).last_hidden_state
        context = self.adapter(hidden.float()).to(self.weight_dtype)
        pred = self.unet(noisy.to(self.weight_dtype), timesteps, encoder_hidden_states=context).sample
        loss = F.mse_loss(pred.float(), target.float(), reduction="mean")
        loss.backward()
        clip_gradients(self.params, self.clip_grad)
        self.optimizer.step()
        self.lr_scheduler.step()
        self.optimizer.zero_grad()


def clip_gradients(params: list[torch.nn.Parameter], clip_grad: dict | None) -> None:
    """A config's ``optim_wrapper.clip_grad`` as MMEngine's ``OptimWrapper`` applies it: by norm
    (``type`` "norm", the default) or by value (``type`` "value"); None clips nothing."""
    import torch

    if not clip_grad:
        return
    kwargs = {key: value for key, value in clip_grad.items() if key != "type"}
    by_value = clip_grad.get("type", "norm") == "value"
    (torch.nn.utils.clip_grad_value_ if by_value else torch.nn.utils.clip_grad_norm_)(params, **kwargs)
