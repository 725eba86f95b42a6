from mmengine.config import read_base

from diffengine.engine import VisualizationHook

with read_base():
    from .._base_.datasets.demo_wds_32 import train_dataloader
    from .._base_.default_runtime import (custom_hooks, default_hooks, default_scope, env_cfg,
                                          load_from, log_level, log_processor, model_wrapper_cfg,
                                          randomness, resume, runner_type, visualizer)
    from .._base_.models.lavi_bridge_demo_tiny import model
    from .._base_.schedules.demo_300 import optim_wrapper, param_scheduler, train_cfg

env_cfg.update(dist_cfg=dict(backend="gloo"))
default_hooks.update(
    logger=dict(type=default_hooks["logger"]["type"], interval=20, log_metric_by_epoch=False),
    checkpoint=dict(type=default_hooks["checkpoint"]["type"], by_epoch=False, interval=100,
                    max_keep_ckpts=2, save_last=True),
)
log_processor.update(window_size=20)
randomness.update(seed=0)
custom_hooks = [
    *custom_hooks,
    dict(type=VisualizationHook, interval=100, num_inference_steps=20, guidance_scale=4.0,
         height=32, width=32,
         prompts=["a red circle on a white background", "a blue square on a black background",
                  "a yellow triangle on a white background", "a green circle on a black background"]),
]
