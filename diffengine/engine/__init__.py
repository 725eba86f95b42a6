"""Training engine: runner, checkpoint loading, DDP wrapper, optimizer groups and hooks."""
from .checkpoint import FiniteWeightsHook, PlainMessageHubHook, load_local_checkpoint
from .hooks import (
                    BridgeCheckpointHook,
                    CrashSafeCheckpointHook,
                    DataSkipLogHook,
                    DeferredRuntimeInfoHook,
                    ModelFolderCheckpointHook,
                    ShapesBenchHook,
                    ThroughputHook,
                    VisualizationHook,
)
from .loops import StreamingIterBasedTrainLoop
from .model_wrapper import DeviceAgnosticDDP, ShardedLanguageModelDDP, unwrap_model
from .optim_constructor import ParamGroupsOptimWrapperConstructor
from .optim_wrapper import GuardedAmpOptimWrapper, GuardedOptimWrapper
from .runner import DiffEngineRunner

__all__ = [
    "FiniteWeightsHook", "PlainMessageHubHook", "load_local_checkpoint", "BridgeCheckpointHook",
    "CrashSafeCheckpointHook", "DataSkipLogHook", "DeferredRuntimeInfoHook", "ModelFolderCheckpointHook",
    "ShapesBenchHook", "unwrap_model",
    "StreamingIterBasedTrainLoop", "ThroughputHook", "VisualizationHook", "DeviceAgnosticDDP",
    "ShardedLanguageModelDDP", "ParamGroupsOptimWrapperConstructor", "GuardedAmpOptimWrapper", "GuardedOptimWrapper",
    "DiffEngineRunner",
]
