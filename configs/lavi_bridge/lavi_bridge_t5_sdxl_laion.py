from mmengine.config import read_base

with read_base():
    # the T5-Large + SD1.5 run's schedule (the paper's learning rates), runtime and prompts, with
    # the SDXL model and 1024 px data
    # the names imported after the star replace its ones: keep this order
    # isort: off
    from .lavi_bridge_v15_laion import *
    from .._base_.datasets.laion_wds_1024 import train_dataloader
    from .._base_.models.lavi_bridge_t5_large_sdxl import model
    # isort: on

# the sample grid at SDXL's size (the SD1.5 run's VisualizationHook, the one with prompts, draws 512 px)
custom_hooks = [dict(hook, height=1024, width=1024) if "prompts" in hook else hook for hook in custom_hooks]
