from mmengine.config import read_base
from mmengine.optim import CosineAnnealingLR, LinearLR
from torch.optim import AdamW

from diffengine.engine import GuardedOptimWrapper, ParamGroupsOptimWrapperConstructor, StreamingIterBasedTrainLoop
from diffengine.models import AutoencoderKLTrainer

with read_base():
    from .._base_.datasets.shapes_wds_32 import train_dataloader
    from .._base_.shapes_stage1_runtime import *

# ShapesBench stage 1a: the VAE of the small text-to-image model (32 px <-> 8 x 8 x 4 latents)
model = dict(type=AutoencoderKLTrainer, vae="data/shapes/untrained/vae", kl_weight=1e-6)
optim_wrapper = dict(
    type=GuardedOptimWrapper,
    constructor=ParamGroupsOptimWrapperConstructor,
    optimizer=dict(type=AdamW, lr=2e-3, betas=(0.9, 0.999), weight_decay=0.0),
    clip_grad=dict(max_norm=1.0),
)
max_iters = 2000
param_scheduler = [
    dict(type=LinearLR, start_factor=0.01, by_epoch=False, begin=0, end=100),
    dict(type=CosineAnnealingLR, by_epoch=False, begin=100, end=max_iters, eta_min=1e-5),
]
train_cfg = dict(type=StreamingIterBasedTrainLoop, max_iters=max_iters)
train_dataloader.update(batch_size=32)
