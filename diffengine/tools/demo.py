"""``diffengine demo``: a tiny T5 bridged to ShapesBench's stage-1 model in a few CPU minutes."""
import argparse
import time
from pathlib import Path

from diffengine.constants import BRIDGE_FOLDER, SAMPLES_FOLDER
from diffengine.errors import ConfigError
from diffengine.work_dirs import run_outputs

from .demo_assets import demo_folders, demo_overrides, make_demo_assets


def run_demo(args: argparse.Namespace) -> None:
    """Build the demo's assets (once), train the demo config on them, and print the loss, the
    ShapesBench judge's scores before and after training, and where the outputs are."""
    from diffengine.engine.hooks.shapesbench_hook import ShapesBenchHook

    from .train import build_config, check_resolved_config, run, train_arguments

    if run_outputs(args.work_dir) and not args.overwrite:
        raise ConfigError(f"{args.work_dir} holds an earlier demo run: add --overwrite to replace it, "
                          "or choose another --work-dir")
    start = time.perf_counter()
    # absolute: the bridge manifest records these paths for `diffengine infer` from anywhere
    data = Path(args.data_dir).resolve()
    train_args = train_arguments(
        "lavi_bridge_demo", "--work-dir", args.work_dir, *(["--overwrite"] if args.overwrite else []),
        "--cfg-options", *demo_overrides(*demo_folders(data)), *args.cfg_options)
    # the user's --cfg-options are checked before the assets (half a minute on a first run) are built
    check_resolved_config(build_config(train_args, wds=True))
    make_demo_assets(data)
    runner = run(train_args, wds=True)
    loss = runner.message_hub.get_scalar("train/loss")
    print(f"demo finished in {time.perf_counter() - start:.0f} s; loss {loss.data[0][0]:.4f} at the "
          f"first logged iteration, {loss.mean(20):.4f} over the last 20 iterations")
    print("  ShapesBench judge on held-out prompts (colour / shape / background / all three):")
    for when, key in (("before", ShapesBenchHook.BEFORE_INFO), ("after", ShapesBenchHook.LATEST_INFO)):
        print(f"    {when:6s} training: " + "; ".join(
            f"{set_name.replace('_', ' ')} " + " / ".join(
                f"{100 * scores[name]['mean']:.0f} %" for name in ("color", "shape", "background", "all"))
            for set_name, scores in runner.message_hub.get_info(key).items()))
    print(f"  samples:    {runner.work_dir}/{SAMPLES_FOLDER}/\n"
          f"  bridge:     {runner.work_dir}/{BRIDGE_FOLDER}/ (LoRA + adapter safetensors)\n"
          f"  checkpoint: {runner.work_dir}/iter_*.pth")
