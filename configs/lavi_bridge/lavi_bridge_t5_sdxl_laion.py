from mmengine.config import read_base

with read_base():
    # the T5-Large + SD1.5 run's schedule (the paper's learning rates), runtime and prompts, with
    # the SDXL model and 1024 px data
    from .._base_.datasets.laion_wds_1024 import train_dataloader
    from .._base_.models.lavi_bridge_t5_large_sdxl import model
    from .lavi_bridge_v15_laion import (
        custom_hooks,
        default_hooks,
        default_scope,
        env_cfg,
        load_from,
        log_level,
        log_processor,
        model_wrapper_cfg,
        optim_wrapper,
        param_scheduler,
        randomness,
        resume,
        train_cfg,
        visualizer,
    )

# the sample grid at SDXL's size (the SD1.5 run's VisualizationHook, the one with prompts, draws 512 px)
custom_hooks = [dict(hook, height=1024, width=1024) if "prompts" in hook else hook for hook in custom_hooks]
