"""Training engine: runner, checkpoint loading, DDP wrapper, optimizer groups and hooks."""
from .checkpoint import PlainMessageHubHook, load_local_checkpoint
from .hooks import (BridgeCheckpointHook, DataSkipLogHook, ModelFolderCheckpointHook,
                    ParamGroupLrHook, ShapesBenchHook, ThroughputHook, VisualizationHook)
from .loops import StreamingIterBasedTrainLoop
from .model_wrapper import DeviceAgnosticDDP, unwrap_model
from .optim_constructor import ParamGroupsOptimWrapperConstructor
from .runner import DiffEngineRunner

__all__ = [
    "PlainMessageHubHook", "load_local_checkpoint", "BridgeCheckpointHook", "DataSkipLogHook",
    "ModelFolderCheckpointHook", "ShapesBenchHook", "unwrap_model",
    "ParamGroupLrHook", "StreamingIterBasedTrainLoop", "ThroughputHook",
    "VisualizationHook", "DeviceAgnosticDDP", "ParamGroupsOptimWrapperConstructor", "DiffEngineRunner",
]
