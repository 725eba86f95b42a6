import pytest
import torch
from diffusers import StableDiffusionPipeline, UniPCMultistepScheduler

from diffengine.models import LaViBridge, StableDiffusion
from tests.helpers import fixed_batch, seeded_loss

CAPTIONS = ("a red circle on a white background", "a blue backdrop with a yellow square")


def test_trains_unet_and_text_encoder_fully_and_keeps_the_vae(tiny_bert, tiny_sd):
    model = StableDiffusion(tiny_bert, tiny_sd, max_length=16)
    vae = {n: p.detach().clone() for n, p in model.vae.named_parameters()}
    unet = {n: p.detach().clone() for n, p in model.unet.named_parameters()}
    text = {n: p.detach().clone() for n, p in model.language.model.named_parameters()}
    groups = model.parameter_groups()
    assert len(groups["unet"]) == len(unet) and len(groups["text_encoder"]) == len(text)
    optimizer = torch.optim.AdamW([p for g in groups.values() for p in g], lr=2e-3)
    before = seeded_loss(model, fixed_batch(CAPTIONS))
    torch.manual_seed(0)
    for _ in range(10):
        optimizer.zero_grad()
        model(fixed_batch(CAPTIONS))["loss"].backward()
        optimizer.step()
    assert seeded_loss(model, fixed_batch(CAPTIONS)) < before
    assert all(torch.equal(p, vae[n]) for n, p in model.vae.named_parameters())
    assert all(not torch.equal(p, unet[n]) for n, p in model.unet.named_parameters())
    changed = [not torch.equal(p, text[n]) for n, p in model.language.model.named_parameters()]
    assert sum(changed) > 0.9 * len(changed)  # the rows of unused words do not move
    frozen_text = StableDiffusion(tiny_bert, tiny_sd, max_length=16, train_text_encoder=False)
    assert frozen_text.parameter_groups()["text_encoder"] == []


def test_saves_a_stable_diffusion_folder_that_diffusers_runs_the_same(tiny_bert, tiny_sd, tmp_path):
    model = StableDiffusion(tiny_bert, tiny_sd, max_length=16).eval()
    with torch.no_grad():
        for p in model.unet.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    folder = model.save_pretrained(tmp_path / "sd")
    expected = model.infer(list(CAPTIONS), num_inference_steps=4, guidance_scale=3.0, seed=5,
                           output_type="np")
    # sampling defaults to UniPC (the hooks pass scheduler=None); the folder keeps the training schedule
    assert isinstance(model.pipeline(None).scheduler, UniPCMultistepScheduler)
    pipeline = StableDiffusionPipeline.from_pretrained(folder, safety_checker=None)
    assert type(pipeline.scheduler).__name__ == "DDPMScheduler"
    pipeline.scheduler = UniPCMultistepScheduler.from_config(pipeline.scheduler.config)
    pipeline.set_progress_bar_config(disable=True)
    images = pipeline(list(CAPTIONS), negative_prompt=["", ""], num_inference_steps=4, guidance_scale=3.0,
                      generator=torch.Generator().manual_seed(5), output_type="np").images
    assert expected.shape == (2, 32, 32, 3)
    assert abs(images - expected).max() == 0
    reloaded = StableDiffusion.from_pretrained(folder)
    assert reloaded.language.max_length == 16
    again = reloaded.infer(list(CAPTIONS), num_inference_steps=4, guidance_scale=3.0, seed=5,
                           output_type="np")
    assert abs(again - expected).max() == 0
    # the folder is a base model a bridge can be trained on
    bridge = LaViBridge(tiny_bert, str(folder), max_length=16)
    assert bridge.denoiser.config.cross_attention_dim == 32


def test_refuses_mismatched_widths_and_non_unet_models(tiny_bert, tiny_pixart, tmp_path, monkeypatch):
    from diffengine.models.language import LanguageModel
    from diffengine.models.vision import VisionFamily
    from diffengine.tools.demo_assets import make_tiny_sd

    def never(*args, **kwargs):
        raise AssertionError("a model's weights were loaded")


    wide = make_tiny_sd(tmp_path / "wide", cross_attention_dim=64)
    with monkeypatch.context() as patch:  # refused from the configs, before any weights load
        patch.setattr(LanguageModel, "__init__", never)
        patch.setattr(VisionFamily, "load", never)
        with pytest.raises(ValueError, match="cross_attention_dim 64 does not match the text encoder's hidden "
                                             "size 32"):
            StableDiffusion(tiny_bert, str(wide))
    with pytest.raises(ValueError, match="trains SD-style UNets"):
        StableDiffusion(tiny_bert, tiny_pixart)
    with pytest.raises(FileNotFoundError, match="not a Stable Diffusion folder"):
        StableDiffusion.from_pretrained(tmp_path)
