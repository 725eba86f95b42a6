from mmengine.optim import ConstantLR
from torch.optim import AdamW

from diffengine.engine import GuardedOptimWrapper, ParamGroupsOptimWrapperConstructor, StreamingIterBasedTrainLoop

# ShapesBench bridges: a short CPU run, so learning rates 20x the paper's (keeping the text LoRA
# 10x below the vision LoRA and the adapter)
optim_wrapper = dict(
    type=GuardedOptimWrapper,
    constructor=ParamGroupsOptimWrapperConstructor,
    optimizer=dict(type=AdamW, lr=2e-3, betas=(0.9, 0.999), weight_decay=1e-2, eps=1e-8),
    paramwise_cfg=dict(group_lr=dict(vision_lora=2e-3, text_lora=2e-4, adapter=2e-3)),
    clip_grad=dict(max_norm=1.0),
)
param_scheduler = [dict(type=ConstantLR, factor=1.0, by_epoch=False)]
train_cfg = dict(type=StreamingIterBasedTrainLoop, max_iters=500)
