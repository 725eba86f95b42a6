from mmengine.optim import ConstantLR
from torch.optim import AdamW

from diffengine.engine import GuardedOptimWrapper, ParamGroupsOptimWrapperConstructor, StreamingIterBasedTrainLoop

# the paper's optimisation: AdamW, one learning rate per bridge part, clipping at 1.0, constant LR
optim_wrapper = dict(
    type=GuardedOptimWrapper,
    constructor=ParamGroupsOptimWrapperConstructor,
    optimizer=dict(type=AdamW, lr=1e-4, betas=(0.9, 0.999), weight_decay=1e-2, eps=1e-8),
    paramwise_cfg=dict(group_lr=dict(vision_lora=1e-4, text_lora=5e-6, adapter=1e-4)),
    clip_grad=dict(max_norm=1.0),
)
param_scheduler = [dict(type=ConstantLR, factor=1.0, by_epoch=False)]
# resumes a stream by reseeding its epoch instead of re-reading every trained batch
train_cfg = dict(type=StreamingIterBasedTrainLoop, max_iters=100_000)
