"""Training of a diffusers ``AutoencoderKL``: the latent space a text-to-image model works in."""
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL
from mmengine.model import BaseModel

from diffengine.contracts import PIXELS_KEY
from diffengine.registry import MODELS

from ...data_preprocessor import DiffusionDataPreprocessor


@MODELS.register_module()
class AutoencoderKLTrainer(BaseModel):
    """Reconstruction MSE plus ``kl_weight`` x the KL of the latent posterior to N(0, I).

    This is the latent-diffusion recipe's VAE objective without its perceptual and adversarial
    terms (enough for flat synthetic images; photographs need those). The decoder sees a sample
    of the posterior, as in training the LDM.

    Args:
        vae: path of a diffusers ``AutoencoderKL`` folder (``config.json`` + weights) to train.
        kl_weight: weight of the KL term (1e-6 in the latent-diffusion VAEs).
    """

    def __init__(self, vae: str, kl_weight: float = 1e-6, data_preprocessor: dict | None = None):
        super().__init__(data_preprocessor=data_preprocessor or DiffusionDataPreprocessor())
        if kl_weight < 0:
            raise ValueError(f"kl_weight must be >= 0, got {kl_weight}")
        self.vae = AutoencoderKL.from_pretrained(vae)
        self.kl_weight = kl_weight

    def parameter_groups(self) -> dict[str, list[torch.nn.Parameter]]:
        """One optimizer group: the whole autoencoder."""
        return {"vae": list(self.vae.parameters())}

    def forward(self, inputs: dict, data_samples: dict | None = None, mode: str = "loss") -> dict:
        """``{"loss_reconstruction", "loss_kl"}`` for ``{"pixel_values": (B,3,H,W) in [-1,1]}``."""
        if mode != "loss":
            raise NotImplementedError(f"AutoencoderKLTrainer.forward supports mode='loss' only, "
                                      f"got '{mode}'")
        pixels = inputs[PIXELS_KEY]
        posterior = self.vae.encode(pixels).latent_dist
        reconstruction = self.vae.decode(posterior.sample()).sample
        return {"loss_reconstruction": F.mse_loss(reconstruction, pixels),
                "loss_kl": self.kl_weight * posterior.kl().mean()}

    def save_pretrained(self, directory: str | Path, **_) -> Path:
        """Write the autoencoder as a diffusers folder (safetensors), ready to be a base model's ``vae/``."""
        self.vae.save_pretrained(directory, safe_serialization=True)
        return Path(directory)
