from mmengine.config import read_base

with read_base():
    # the Llama-2 + SD1.5 run's schedule (the paper's learning rates), runtime and prompts, with
    # this model and 1024 px data
    # the names imported after the star replace its ones: keep this order
    # isort: off
    from .lavi_bridge_llama2_v15_laion import *
    from .._base_.datasets.laion_wds_1024 import train_dataloader
    from .._base_.models.lavi_bridge_llama2_7b_flux_dev import model
    # isort: on

# the sample grid at the model's size, with its own sampler (flow_euler: the default for flow
# matching) and FluxPipeline's 28 steps; guidance 1: no classifier-free guidance, since FLUX.1-dev is guided
# through its distilled guidance embedding (3.5, as trained)
custom_hooks = [dict(hook, height=1024, width=1024, num_inference_steps=28, guidance_scale=1.0) if "prompts" in hook
                else hook for hook in custom_hooks]
# a 12 B transformer beside a 7 B LM: batch 2 per GPU on an 80 GB card is an estimate (not measured),
# see configs/lavi_bridge/README.md
train_dataloader = dict(train_dataloader, batch_size=2)
