from mmengine.config import read_base

with read_base():
    # lavi_bridge_v15_laion trained from precomputed latents: no VAE encoder in memory or in the step
    from .._base_.datasets.laion_latents_512 import train_dataloader
    from .lavi_bridge_v15_laion import (
        custom_hooks,
        default_hooks,
        default_scope,
        env_cfg,
        load_from,
        log_level,
        log_processor,
        model,
        model_wrapper_cfg,
        optim_wrapper,
        param_scheduler,
        randomness,
        resume,
        train_cfg,
        visualizer,
    )

model.update(vae_encoder=False)
