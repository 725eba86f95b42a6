from mmengine.optim import ConstantLR
from torch.optim import AdamW

from diffengine.engine import GuardedAmpOptimWrapper, ParamGroupsOptimWrapperConstructor, StreamingIterBasedTrainLoop

# the paper's optimisation: AdamW, one learning rate per bridge part, clipping at 1.0, constant LR.
# On a GPU's fast path: autocast in bfloat16 (float16 with loss scaling where the GPU lacks it);
# fused AdamW updates all parameters in one kernel and skips a non-finite step on the device, so
# the guard reads gradient norms to the host at log intervals instead of syncing every step.
# On a CPU: --cfg-options optim_wrapper.type=GuardedOptimWrapper
optim_wrapper = dict(
    type=GuardedAmpOptimWrapper,
    dtype="auto",
    constructor=ParamGroupsOptimWrapperConstructor,
    optimizer=dict(type=AdamW, lr=1e-4, betas=(0.9, 0.999), weight_decay=1e-2, eps=1e-8, fused=True),
    paramwise_cfg=dict(group_lr=dict(vision_lora=1e-4, text_lora=5e-6, adapter=1e-4)),
    clip_grad=dict(max_norm=1.0),
    host_read_interval=50,
)
param_scheduler = [dict(type=ConstantLR, factor=1.0, by_epoch=False)]
# resumes a stream by reseeding its epoch instead of re-reading every trained batch
train_cfg = dict(type=StreamingIterBasedTrainLoop, max_iters=100_000)
