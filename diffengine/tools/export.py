"""``diffengine export``: a trained bridge as a diffusers pipeline folder (``LaViBridgePipeline``)."""
import argparse
from pathlib import Path

from .. import constants
from ..file_writes import filled_folder, visible
from ..work_dirs import resolve_bridge_dir
from .arguments import creatable_folder
from .infer import add_base_model_arguments, load_bridge_model


def add_export_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``diffengine export`` (argparse only: keeps ``--help`` fast)."""
    parser.add_argument("bridge", metavar="WORK_DIR_OR_BRIDGE",
                        help="a bridge folder, or a work dir (its newest bridge is used)")
    parser.add_argument("out", metavar="OUT_DIR", help="the pipeline folder to write (new or empty)")
    parser.add_argument("--merge-lora", action="store_true",
                        help="fold the LoRA into the LM and UNet weights: a plain diffusers folder "
                        "(default: base weights + the LoRA beside them in <component>_lora/, bit-exact)")
    parser.add_argument("--scheduler", choices=constants.INFERENCE_SCHEDULER_NAMES, default=None,
                        help="the pipeline's sampler (default as infer: unipc, flow_euler for SD3 and Flux)")
    add_base_model_arguments(parser)


def run_export(args: argparse.Namespace) -> Path:
    """Load base models + bridge and save them as a ``LaViBridgePipeline`` folder; returns it.

    Raises FileNotFoundError or ValueError with a one-line message for a bad input, before any
    model is loaded.
    """
    bridge_dir = resolve_bridge_dir(args.bridge)
    out_dir = Path(args.out)
    if out_dir.exists() and (not out_dir.is_dir() or visible(out_dir.iterdir())):
        raise ValueError(f"{out_dir} exists and is not an empty folder; choose a new OUT_DIR")
    for option, path in (("--text-encoder", args.text_encoder), ("--vision-model", args.vision_model)):
        if path is not None and not Path(path).is_dir():
            raise FileNotFoundError(f"{option} {path} is not a folder")
    creatable_folder(out_dir, "OUT_DIR")

    from diffengine.models import LaViBridgePipeline

    # a bridge trained from latent shards may record vae_encoder=False: the exported vae/ is whole
    model = load_bridge_model(args, bridge_dir, vae_encoder=True).eval()
    pipeline = LaViBridgePipeline.from_model(model, args.scheduler)
    if args.merge_lora:
        pipeline.merge_lora()
    # model_index.json last: a crash never leaves a pipeline that loads without its LoRA
    with filled_folder(out_dir, "model_index.json") as staging:
        pipeline.save_pretrained(staging)
    lora = "LoRA merged" if args.merge_lora else "LoRA beside the base weights in *_lora/"
    print(f"exported {bridge_dir} to {out_dir} ({lora}); load it with "
          "LaViBridgePipeline.from_pretrained")
    return out_dir
