from mmengine.config import read_base

with read_base():
    # everything as the T5-Large + SD1.5 run (data, schedule, runtime, sample prompts) but the
    # model and its learning rates
    # the names imported after the star replace its ones: keep this order
    # isort: off
    from .lavi_bridge_v15_laion import *
    from .._base_.models.lavi_bridge_t5_large_pixart_512 import model
    # isort: on

# the paper's learning rates for the PixArt combination: vision LoRA and adapter 2e-5, text LoRA 5e-6
optim_wrapper["paramwise_cfg"]["group_lr"].update(vision_lora=2e-5, text_lora=5e-6, adapter=2e-5)
