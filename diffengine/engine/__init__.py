"""Training engine: runner, checkpoint loading, DDP wrapper, optimizer groups and hooks."""
from .checkpoint import PlainMessageHubHook, load_local_checkpoint
from .hooks import (BridgeCheckpointHook, DataSkipLogHook, ParamGroupLrHook, ThroughputHook,
                    VisualizationHook)
from .loops import StreamingIterBasedTrainLoop
from .model_wrapper import DeviceAgnosticDDP
from .optim_constructor import LaViBridgeOptimWrapperConstructor
from .runner import DiffEngineRunner

__all__ = [
    "PlainMessageHubHook", "load_local_checkpoint", "BridgeCheckpointHook", "DataSkipLogHook",
    "ParamGroupLrHook", "StreamingIterBasedTrainLoop", "ThroughputHook",
    "VisualizationHook", "DeviceAgnosticDDP", "LaViBridgeOptimWrapperConstructor", "DiffEngineRunner",
]
