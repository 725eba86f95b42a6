"""Training hooks: sample images, saved model folders, skipped data, throughput, deferred logging."""
from .crash_safe_checkpoint_hook import CrashSafeCheckpointHook
from .data_skip_log_hook import DataSkipLogHook
from .deferred_runtime_info_hook import DeferredRuntimeInfoHook
from .model_folder_checkpoint_hook import BridgeCheckpointHook, ModelFolderCheckpointHook
from .shapesbench_hook import ShapesBenchHook
from .throughput_hook import ThroughputHook
from .visualization_hook import VisualizationHook

__all__ = ["BridgeCheckpointHook", "CrashSafeCheckpointHook", "DataSkipLogHook", "DeferredRuntimeInfoHook",
           "ModelFolderCheckpointHook", "ShapesBenchHook", "ThroughputHook", "VisualizationHook"]
