from mmengine.config import read_base

from diffengine.engine import VisualizationHook

with read_base():
    from .._base_.datasets.laion_wds_512 import train_dataloader
    from .._base_.default_runtime import *
    from .._base_.models.lavi_bridge_t5_large_v15 import model
    from .._base_.schedules.lavi_bridge_100k import optim_wrapper, param_scheduler, train_cfg

custom_hooks = [
    *custom_hooks,
    dict(type=VisualizationHook, interval=1000, height=512, width=512,
         prompts=["A photo of a cat wearing a red hat, sitting on a wooden chair",
                  "A bowl of ramen on a table next to a window, anime style"]),
]
