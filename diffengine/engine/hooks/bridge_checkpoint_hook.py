"""Save a self-contained bridge folder (LoRA + adapter safetensors) next to every checkpoint."""
import os
import shutil
from pathlib import Path

from mmengine.dist import is_main_process
from mmengine.hooks import Hook

from diffengine.registry import HOOKS

LAST_BRIDGE_FILE = "last_bridge"


@HOOKS.register_module()
class BridgeCheckpointHook(Hook):
    """Writes ``WORK_DIR/bridge/iter_N/`` whenever MMEngine saves a checkpoint; keeps the last K.

    The folder is written under a temporary name and renamed, so a crash never leaves a
    half-written bridge behind; ``bridge/last_bridge`` holds the newest one's folder name.
    """

    priority = "VERY_LOW"

    def __init__(self, max_keep: int = 3):
        if max_keep < 1:
            raise ValueError(f"max_keep must be >= 1, got {max_keep}")
        self.max_keep = max_keep

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        """Save the bridge of the iteration this checkpoint records."""
        if not is_main_process():
            return
        iteration = checkpoint["meta"]["iter"]
        root = Path(runner.work_dir) / "bridge"
        final = root / f"iter_{iteration}"
        staging = root / f".iter_{iteration}.tmp"
        shutil.rmtree(staging, ignore_errors=True)
        model = getattr(runner.model, "module", runner.model)
        model.save_bridge(staging, iteration=iteration)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(staging, final)
        # the folder name, not a path: a moved or copied work dir still finds its bridge
        (root / LAST_BRIDGE_FILE).write_text(final.name)
        saved = sorted(root.glob("iter_*"), key=lambda p: int(p.name.split("_")[1]))
        for old in saved[:-self.max_keep]:
            shutil.rmtree(old)
