"""Training hooks: sample images, bridge folders, per-group learning rates."""
from .bridge_checkpoint_hook import BridgeCheckpointHook
from .param_group_lr_hook import ParamGroupLrHook
from .visualization_hook import VisualizationHook

__all__ = ["BridgeCheckpointHook", "ParamGroupLrHook", "VisualizationHook"]
