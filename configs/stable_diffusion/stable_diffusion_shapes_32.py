from mmengine.config import read_base
from mmengine.optim import CosineAnnealingLR, LinearLR
from torch.optim import AdamW

from diffengine.engine import (
    GuardedOptimWrapper,
    ParamGroupsOptimWrapperConstructor,
    StreamingIterBasedTrainLoop,
    VisualizationHook,
)
from diffengine.models import StableDiffusion

with read_base():
    from .._base_.datasets.shapes_wds_32 import train_dataloader
    from .._base_.shapes_stage1_runtime import *

# ShapesBench stage 1b: a small SD-style UNet and its own text encoder trained together on the
# latents of the stage-1a VAE; the result is the "pretrained" vision model bridges are tested on
model = dict(
    type=StableDiffusion,
    text_encoder="data/shapes/untrained/stage1/text_encoder",
    vision_model="data/shapes/untrained/stage1",
    max_length=16,
    train_text_encoder=True,
    caption_dropout=0.1,
)
optim_wrapper = dict(
    type=GuardedOptimWrapper,
    constructor=ParamGroupsOptimWrapperConstructor,
    optimizer=dict(type=AdamW, lr=1e-3, betas=(0.9, 0.999), weight_decay=1e-2),
    clip_grad=dict(max_norm=1.0),
)
max_iters = 3000
param_scheduler = [
    dict(type=LinearLR, start_factor=0.01, by_epoch=False, begin=0, end=100),
    dict(type=CosineAnnealingLR, by_epoch=False, begin=100, end=max_iters, eta_min=1e-5),
]
train_cfg = dict(type=StreamingIterBasedTrainLoop, max_iters=max_iters)
custom_hooks = [
    *custom_hooks,
    dict(type=VisualizationHook, interval=500, num_inference_steps=25, guidance_scale=5.0,
         prompts=["a red circle on a white background", "a blue backdrop with a yellow square",
                  "green triangle, black background", "a picture of a purple cross over blue"]),
]
