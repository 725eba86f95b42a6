from mmengine.config import read_base

from diffengine.engine import ShapesBenchHook, VisualizationHook

with read_base():
    from .._base_.datasets.demo_wds_32 import train_dataloader
    from .._base_.default_runtime import *
    from .._base_.models.lavi_bridge_demo_tiny import model
    from .._base_.schedules.shapes_bridge import optim_wrapper, param_scheduler, train_cfg

# `diffengine demo`: a random tiny T5 bridged to ShapesBench's stage-1 model in a few CPU minutes
train_cfg.update(max_iters=250)
env_cfg.update(dist_cfg=dict(backend="gloo"))
default_hooks.update(
    logger=dict(type=default_hooks["logger"]["type"], interval=50, log_metric_by_epoch=False),
    checkpoint=dict(type=default_hooks["checkpoint"]["type"], by_epoch=False, interval=125,
                    max_keep_ckpts=2, save_last=True),
)
log_processor.update(window_size=50)
randomness.update(seed=0)
custom_hooks = [
    *custom_hooks,
    # held-out ShapesBench prompts (new phrasings and new combinations)
    dict(type=VisualizationHook, interval=125, num_inference_steps=25, guidance_scale=5.0,
         prompts=["on a white background, a red circle", "a yellow cross with a blue backdrop",
                  "a picture of a green square over black", "a purple triangle on a white background",
                  "orange triangle, white background", "a blue backdrop with a green square"]),
    dict(type=ShapesBenchHook, images_per_prompt=1),
]
