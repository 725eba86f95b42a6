import pytest
import torch
from diffusers import AutoencoderKL

from diffengine.models import AutoencoderKLTrainer


def test_reconstruction_improves_and_the_saved_vae_reproduces(tiny_sd, tmp_path):
    model = AutoencoderKLTrainer(f"{tiny_sd}/vae", kl_weight=1e-3)
    pixels = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1

    def reconstruction_loss() -> float:
        torch.manual_seed(0)
        with torch.no_grad():
            return model({"pixel_values": pixels})["loss_reconstruction"].item()

    losses = model({"pixel_values": pixels})
    assert set(losses) == {"loss_reconstruction", "loss_kl"} and losses["loss_kl"] > 0
    before = reconstruction_loss()
    optimizer = torch.optim.Adam(model.parameter_groups()["vae"], lr=3e-3)
    for _ in range(15):
        optimizer.zero_grad()
        sum(model({"pixel_values": pixels}).values()).backward()
        optimizer.step()
    assert reconstruction_loss() < 0.7 * before
    folder = model.save_pretrained(tmp_path / "vae")
    reloaded = AutoencoderKL.from_pretrained(folder)
    with torch.no_grad():
        expected = model.vae.encode(pixels).latent_dist.mean
        torch.testing.assert_close(reloaded.encode(pixels).latent_dist.mean, expected)


def test_rejects_a_negative_kl_weight_and_other_modes(tiny_sd):
    with pytest.raises(ValueError, match="kl_weight"):
        AutoencoderKLTrainer(f"{tiny_sd}/vae", kl_weight=-1)
    with pytest.raises(NotImplementedError, match="mode='loss'"):
        AutoencoderKLTrainer(f"{tiny_sd}/vae")({"pixel_values": torch.zeros(1, 3, 32, 32)},
                                               mode="predict")
