"""Training hooks: sample images, saved model folders, skipped data, throughput."""
from .data_skip_log_hook import DataSkipLogHook
from .model_folder_checkpoint_hook import BridgeCheckpointHook, ModelFolderCheckpointHook
from .shapesbench_hook import ShapesBenchHook
from .throughput_hook import ThroughputHook
from .visualization_hook import VisualizationHook

__all__ = ["BridgeCheckpointHook", "DataSkipLogHook", "ModelFolderCheckpointHook",
           "ShapesBenchHook", "ThroughputHook", "VisualizationHook"]
