from mmengine.optim import ConstantLR, OptimWrapper
from torch.optim import AdamW

from diffengine.engine import LaViBridgeOptimWrapperConstructor, StreamingIterBasedTrainLoop

# a short run for tiny models: higher learning rates than the paper's so it learns in minutes
optim_wrapper = dict(
    type=OptimWrapper,
    constructor=LaViBridgeOptimWrapperConstructor,
    optimizer=dict(type=AdamW, lr=1e-3, betas=(0.9, 0.999), weight_decay=1e-2, eps=1e-8),
    paramwise_cfg=dict(group_lr=dict(vision_lora=1e-3, text_lora=1e-4, adapter=1e-3)),
    clip_grad=dict(max_norm=1.0),
)
param_scheduler = [dict(type=ConstantLR, factor=1.0, by_epoch=False)]
# resumes a stream by reseeding its epoch instead of re-reading every trained batch
train_cfg = dict(type=StreamingIterBasedTrainLoop, max_iters=300)
