from mmengine.config import read_base

with read_base():
    # everything as the MiniLM run but the language model: a 2-layer Llama that
    # `diffengine shapesbench run` pretrains on text (diffengine/tools/shapes_assets.py)
    from .lavi_bridge_minilm_shapes import (
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
        train_dataloader,
        visualizer,
    )

model.update(text_encoder="data/shapes/tiny_llama")
