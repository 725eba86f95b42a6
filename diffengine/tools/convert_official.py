"""``diffengine convert-official``: the authors' released LaVi-Bridge weights -> a bridge folder."""
import argparse
from pathlib import Path

from .. import constants
from ..constants import BRIDGE_MANIFEST, OFFICIAL_COMBO_NAMES
from ..file_writes import visible
from .arguments import add_overwrite_argument, creatable_folder, refuse_to_overwrite


def add_convert_official_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``diffengine convert-official`` (argparse only)."""
    parser.add_argument("ckpt_dir", metavar="CKPT_DIR",
                        help="folder with lora_vis.pt, lora_text.pt and adapter/")
    parser.add_argument("out", metavar="OUT_BRIDGE_DIR")
    parser.add_argument("--combo", required=True, choices=OFFICIAL_COMBO_NAMES,
                        help="which released combination the weights are")
    parser.add_argument("--text-encoder", default=None,
                        help="base language model id or path (default: the combo's)")
    parser.add_argument("--vision-model", default=None,
                        help="base vision model id or path (default: the combo's, SD1.4 or PixArt-alpha 512)")
    parser.add_argument("--dtype", choices=constants.WEIGHT_DTYPE_NAMES, default="float32",
                        help="dtype the frozen base models load in while converting")
    add_overwrite_argument(parser, "a bridge in OUT_BRIDGE_DIR")


def run_convert_official(args: argparse.Namespace) -> None:
    """Convert and print where the bridge went; errors are ValueError/FileNotFoundError."""
    refuse_to_overwrite([Path(args.out) / BRIDGE_MANIFEST], args.overwrite)
    out = Path(args.out)
    if out.is_dir() and visible(out.iterdir()) and not (out / BRIDGE_MANIFEST).is_file():
        raise ValueError(f"OUT_BRIDGE_DIR {out} holds files that are not a bridge: choose a new or empty folder")
    creatable_folder(out, "OUT_BRIDGE_DIR")
    from diffengine.models.editors.lavi_bridge.official_weights import convert_official_checkpoint

    out = convert_official_checkpoint(args.ckpt_dir, args.combo, args.out,
                                      text_encoder=args.text_encoder,
                                      vision_model=args.vision_model, weight_dtype=args.dtype)
    print(f"wrote bridge {out}; train from it with --cfg-options model.bridge_path={out}")
