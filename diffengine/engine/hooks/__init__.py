"""Training hooks: sample images, bridge folders, per-group learning rates, skipped data."""
from .bridge_checkpoint_hook import BridgeCheckpointHook
from .data_skip_log_hook import DataSkipLogHook
from .param_group_lr_hook import ParamGroupLrHook
from .visualization_hook import VisualizationHook

__all__ = ["BridgeCheckpointHook", "DataSkipLogHook", "ParamGroupLrHook", "VisualizationHook"]
