from mmengine.config import read_base

with read_base():
    # the Llama-2 + SD1.5 run's schedule (the paper's learning rates), runtime and prompts, with
    # this model and 1024 px data
    # the names imported after the star replace its ones: keep this order
    # isort: off
    from .lavi_bridge_llama2_v15_laion import *
    from .._base_.datasets.laion_wds_1024 import train_dataloader
    from .._base_.models.lavi_bridge_llama2_7b_sd35_medium import model
    # isort: on

# the sample grid at the model's size, with its own sampler (flow_euler: the default for flow
# matching) and SD3.5-medium's recommended 40 steps at guidance 4.5
custom_hooks = [dict(hook, height=1024, width=1024, num_inference_steps=40, guidance_scale=4.5) if "prompts" in hook
                else hook for hook in custom_hooks]
