from mmengine.config import read_base

from diffengine.engine import DataSkipLogHook, ModelFolderCheckpointHook, ThroughputHook

with read_base():
    from .default_runtime import *

# ShapesBench's stage 1 on CPU: the default runtime with gloo, a fixed seed, a checkpoint every
# 500 iterations, and the default hooks without the bridge saver: these models save a diffusers
# folder (WORK_DIR/pretrained/iter_N) instead
env_cfg.update(dist_cfg=dict(backend="gloo"))
randomness.update(seed=0)
default_hooks.update(
    logger=dict(type=default_hooks["logger"]["type"], interval=100, log_metric_by_epoch=False),
    checkpoint=dict(type=default_hooks["checkpoint"]["type"], by_epoch=False, interval=500,
                    max_keep_ckpts=1, save_last=True),
)
custom_hooks = [
    dict(type=ThroughputHook),
    dict(type=DataSkipLogHook, interval=100),
    dict(type=ModelFolderCheckpointHook, max_keep=1),
]
