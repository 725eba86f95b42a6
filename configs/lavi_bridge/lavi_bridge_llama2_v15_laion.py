from mmengine.config import read_base

with read_base():
    # everything as the T5-Large run (data, schedule, runtime, sample prompts) but the model;
    # the authors' llama2_unet learning rates are the T5 ones: 1e-4 / 5e-6 / 1e-4
    # the names imported after the star replace its ones: keep this order
    # isort: off
    from .lavi_bridge_v15_laion import *
    from .._base_.models.lavi_bridge_llama2_7b_v15 import model
    # isort: on
