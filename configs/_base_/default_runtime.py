from mmengine.hooks import DistSamplerSeedHook, IterTimerHook, LoggerHook, ParamSchedulerHook
from mmengine.visualization import LocalVisBackend, Visualizer

from diffengine.engine import (
    BridgeCheckpointHook,
    CrashSafeCheckpointHook,
    DataSkipLogHook,
    DeferredRuntimeInfoHook,
    ThroughputHook,
)

default_scope = "diffengine"

env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method="fork", opencv_num_threads=0),
    dist_cfg=dict(backend="nccl"),
)

default_hooks = dict(
    # losses stay on the device until a log or checkpoint iteration reads them (no per-step sync)
    runtime_info=dict(type=DeferredRuntimeInfoHook),
    timer=dict(type=IterTimerHook),
    logger=dict(type=LoggerHook, interval=50, log_metric_by_epoch=False),
    param_scheduler=dict(type=ParamSchedulerHook),
    # MMEngine's CheckpointHook, written so that a crash mid-save keeps the newest whole checkpoint
    checkpoint=dict(type=CrashSafeCheckpointHook, by_epoch=False, interval=1000, max_keep_ckpts=3,
                    save_last=True),
    sampler_seed=dict(type=DistSamplerSeedHook),
)
custom_hooks = [
    dict(type=ThroughputHook),
    dict(type=BridgeCheckpointHook, max_keep=3),
    dict(type=DataSkipLogHook, interval=50),  # bad samples skipped by the loader, by kind
]

# DDP that also works for CPU modules (gloo); on GPU it is MMEngine's DDP. A string: MMEngine's
# wrap_model looks the type up by scoped name
model_wrapper_cfg = dict(type="diffengine.DeviceAgnosticDDP", broadcast_buffers=False)

# the count of optimizer steps skipped for a non-finite gradient (GuardedOptimWrapper) is a
# running total: log its latest value (a window of 1), not a mean over the window
log_processor = dict(by_epoch=False, window_size=50,
                     custom_cfg=[dict(data_src="skipped_steps", method_name="mean", window_size=1)])
log_level = "INFO"
visualizer = dict(type=Visualizer, vis_backends=[dict(type=LocalVisBackend)])

load_from = None
resume = False
# a different seed per rank: noise, timesteps and caption dropout must differ between GPUs (the
# data stream has its own seed in train_dataloader)
randomness = dict(seed=None, diff_rank_seed=True)
