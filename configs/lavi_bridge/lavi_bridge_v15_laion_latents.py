from mmengine.config import read_base

with read_base():
    # lavi_bridge_v15_laion trained from precomputed latents: no VAE encoder in memory or in the step
    # the names imported after the star replace its ones: keep this order
    # isort: off
    from .lavi_bridge_v15_laion import *
    from .._base_.datasets.laion_latents_512 import train_dataloader
    # isort: on

model.update(vae_encoder=False)
