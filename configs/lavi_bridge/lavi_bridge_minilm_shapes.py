from mmengine.config import read_base

from diffengine.engine import VisualizationHook

with read_base():
    from .._base_.datasets.shapes_wds_32 import train_dataloader
    from .._base_.default_runtime import *
    from .._base_.models.lavi_bridge_minilm_shapes import model
    from .._base_.schedules.shapes_bridge import optim_wrapper, param_scheduler, train_cfg

# ShapesBench stage 2 (`diffengine shapesbench run`): a pretrained sentence encoder that never saw
# an image, bridged to the frozen stage-1 model. Adapter only: model.text_lora.rank=0
# model.vision_lora.rank=0
# batch 32 and no loader worker: on two CPU cores the worker only takes time from the step
train_dataloader.update(batch_size=32, num_workers=0)
env_cfg.update(dist_cfg=dict(backend="gloo"))
randomness.update(seed=0)
default_hooks.update(
    logger=dict(type=default_hooks["logger"]["type"], interval=50, log_metric_by_epoch=False),
    checkpoint=dict(type=default_hooks["checkpoint"]["type"], by_epoch=False, interval=250,
                    max_keep_ckpts=1, save_last=True),
)
custom_hooks = [
    *custom_hooks,
    dict(type=VisualizationHook, interval=250, num_inference_steps=25, guidance_scale=5.0,
         prompts=["on a white background, a red circle", "a yellow cross with a blue backdrop",
                  "a picture of a green square over black", "purple triangle, white background"]),
]
