"""Seconds from starting ``diffengine wds_train lavi_bridge_demo`` to the end of its first iteration."""
from __future__ import annotations

import contextlib
import io
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .models import CONFIG_BY_SIZE

# log lines of `diffengine wds_train` that mark its progress, first occurrence each
STARTUP_MARKS = {"config_logged_s": re.compile(r"mmengine - INFO - Config:"),
                 "runner_built_s": re.compile(r"Hooks will be executed"),
                 "first_iteration_s": re.compile(r"Iter\(train\) \[\s*1/")}


def time_to_first_iteration(t5_dir: Path, sd_dir: Path, shards: Path, work_dir: Path) -> dict[str, Any]:
    """Seconds from starting ``python -m diffengine wds_train lavi_bridge_demo`` to its first iteration's end.

    Read off its console log as the lines arrive: the LoggerHook line of iteration 1 (logged
    right after that iteration). The demo config runs as shipped, except that its sample grid
    and ShapesBench scoring before iteration 1 are left out (evaluation, not startup), training
    stops after one iteration and logs every iteration.
    """
    import os

    from diffengine.entry_point import main as cli_main

    from ..demo_assets import demo_overrides

    root = work_dir / "startup"
    with contextlib.redirect_stdout(io.StringIO()):
        cli_main(["copy-cfg", CONFIG_BY_SIZE["tiny"], str(root / "configs"), "--overwrite"])
    config = next((root / "configs").rglob(f"{CONFIG_BY_SIZE['tiny']}.py"))
    config.write_text(config.read_text() + "\n# diffengine bench: startup only, no evaluation before iteration 1\n"
                      "custom_hooks = [hook for hook in custom_hooks\n"
                      "                if hook['type'] not in (VisualizationHook, ShapesBenchHook)]\n")
    command = [sys.executable, "-m", "diffengine", "wds_train", str(config), "--work-dir", str(root / "run"),
               "--overwrite", "--cfg-options", *demo_overrides(t5_dir, sd_dir, shards), "train_cfg.max_iters=1",
               "default_hooks.logger.interval=1"]
    marks: dict[str, float] = {}
    lines: list[str] = []
    start = time.perf_counter()
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"}) as process:
        for line in process.stdout:
            now = time.perf_counter() - start
            lines.append(line)
            for name, pattern in STARTUP_MARKS.items():
                if name not in marks and pattern.search(line):
                    marks[name] = round(now, 2)
        returncode = process.wait()
    if returncode != 0 or "first_iteration_s" not in marks:
        raise RuntimeError(f"{' '.join(command)} exited {returncode} without logging iteration 1:\n"
                           + "".join(lines[-20:]))
    return {"command": command, **marks,
            "note": "from process start; config_logged: imports and config check done, runner starting; "
                    "runner_built: model loaded; first_iteration: iteration 1 trained and logged"}
