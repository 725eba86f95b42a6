"""How well a VAE reconstructs ShapesBench images: PSNR, and whether the judge still reads them."""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from diffengine.datasets.shapes import ATTRIBUTES, heldout_specs, render

from .shapes_judge import judge_image


@torch.no_grad()
def reconstruction_report(vae, num_images: int = 256, size: int = 32, seed: int = 7) -> dict:
    """PSNR (dB, pixels in [0, 255]) of ``vae``'s reconstructions of held-out-triple renders, and
    the judge's per-attribute accuracy on the originals and on the reconstructions."""
    rng = np.random.default_rng(seed)
    specs = heldout_specs()
    chosen = [specs[i % len(specs)] for i in range(num_images)]
    originals = np.stack([np.asarray(render(spec, size, rng)[0]) for spec in chosen])
    pixels = torch.from_numpy(originals).permute(0, 3, 1, 2).float() / 127.5 - 1
    decoded = vae.decode(vae.encode(pixels.to(vae.device, vae.dtype)).latent_dist.mode()).sample
    reconstructed = ((decoded.float().clamp(-1, 1) + 1) * 127.5).round().byte()
    reconstructed = reconstructed.permute(0, 2, 3, 1).cpu().numpy()
    mse = np.mean((reconstructed.astype(np.float64) - originals) ** 2)
    report = {"images": num_images, "psnr_db": round(float(10 * np.log10(255 ** 2 / mse)), 2)}
    for name, images in (("originals", originals), ("reconstructions", reconstructed)):
        verdicts = [judge_image(Image.fromarray(image)) for image in images]
        report[f"judge_on_{name}"] = {
            a: round(float(np.mean([v[a] == getattr(s, a) for v, s in zip(verdicts, chosen, strict=True)])), 4)
            for a in ATTRIBUTES}
    return report
