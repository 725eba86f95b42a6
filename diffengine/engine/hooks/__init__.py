"""Training hooks: sample images, bridge folders, per-group learning rates, skipped data, throughput."""
from .bridge_checkpoint_hook import BridgeCheckpointHook
from .data_skip_log_hook import DataSkipLogHook
from .param_group_lr_hook import ParamGroupLrHook
from .throughput_hook import ThroughputHook
from .visualization_hook import VisualizationHook

__all__ = ["BridgeCheckpointHook", "DataSkipLogHook", "ParamGroupLrHook", "ThroughputHook",
           "VisualizationHook"]
