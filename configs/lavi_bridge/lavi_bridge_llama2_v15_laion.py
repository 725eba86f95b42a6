from mmengine.config import read_base

with read_base():
    # everything as the T5-Large run (data, schedule, runtime, sample prompts) but the model;
    # the authors' llama2_unet learning rates are the T5 ones: 1e-4 / 5e-6 / 1e-4
    from .._base_.models.lavi_bridge_llama2_7b_v15 import model
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
        train_dataloader,
        visualizer,
    )
