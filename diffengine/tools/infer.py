"""``diffengine infer``: generate images from a trained bridge."""
import argparse
import re
from pathlib import Path

from .. import constants
from ..file_writes import whole_file
from ..work_dirs import resolve_bridge_dir
from .arguments import (
    add_overwrite_argument,
    image_side,
    non_negative_float,
    positive_int,
    refuse_to_overwrite,
    resolve_device,
    seed,
    writable_folder,
)


def add_infer_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``diffengine infer`` (argparse only: keeps ``--help`` fast)."""
    parser.add_argument("bridge", metavar="BRIDGE_DIR",
                        help="a bridge folder, or a work dir (its newest bridge is used)")
    parser.add_argument("prompts", nargs="+", metavar="PROMPT")
    parser.add_argument("--negative-prompt", default="",
                        help="what to guide away from, with --guidance > 1 (default: the empty prompt)")
    parser.add_argument("--steps", type=positive_int, default=50, help="denoising steps (default 50)")
    parser.add_argument("--guidance", type=non_negative_float, default=7.5,
                        help="classifier-free guidance scale (default 7.5)")
    parser.add_argument("--height", type=image_side, default=None,
                        help="image height, a multiple of 8, of 16 for PixArt, SD3 and Flux (default: the "
                        "resolution the bridge was trained at, else the denoiser's native size)")
    parser.add_argument("--width", type=image_side, default=None,
                        help="image width, a multiple of 8, of 16 for PixArt, SD3 and Flux")
    parser.add_argument("--seed", type=seed, default=0, help="same seed, same image (default 0)")
    parser.add_argument("--scheduler", choices=constants.INFERENCE_SCHEDULER_NAMES,
                        default=None, help="sampler (default: unipc, as the paper; flow_euler for SD3 "
                        "and Flux, whose flow-matching schedules only it samples)")
    parser.add_argument("--out", default="outputs", help="output folder (default ./outputs)")
    add_overwrite_argument(parser, "images in --out")
    parser.add_argument("--device", default=None, help="cuda, cpu, ... (default: cuda if available)")
    add_base_model_arguments(parser)


def add_base_model_arguments(parser: argparse.ArgumentParser) -> None:
    """``--dtype``, ``--text-encoder``, ``--vision-model``: how to rebuild a bridge's base models."""
    parser.add_argument("--dtype", choices=constants.WEIGHT_DTYPE_NAMES, default=None,
                        help="dtype of the frozen weights (default: the bridge's)")
    parser.add_argument("--text-encoder", default=None,
                        help="local path of the base language model, instead of the manifest's id")
    parser.add_argument("--vision-model", default=None,
                        help="local path of the base vision model, instead of the manifest's id")


def load_bridge_model(args: argparse.Namespace, bridge_dir: Path, **overrides):
    """``LaViBridge.from_bridge`` with the base-model options of ``add_base_model_arguments``.

    ``overrides`` are further constructor arguments. A ``--scheduler`` that cannot sample the base
    model's schedule, or a ``--height`` / ``--width`` its denoiser cannot patch, is refused before
    any weights load.
    """
    from diffengine.models import LaViBridge
    from diffengine.models.editors.lavi_bridge.lavi_bridge import read_bridge_manifest
    from diffengine.models.vision import check_image_sides, check_sampler, image_side_multiple

    vision_model = args.vision_model or read_bridge_manifest(bridge_dir).get("vision_model")
    if vision_model and Path(vision_model).is_dir():  # a hub id is read when its weights load
        check_sampler(getattr(args, "scheduler", None), vision_model)
        check_image_sides(image_side_multiple(vision_model), {f"--{name}": getattr(args, name, None)
                                                              for name in ("height", "width")}, vision_model)
    overrides.update({k: v for k, v in (("text_encoder", args.text_encoder),
                                        ("vision_model", args.vision_model),
                                        ("weight_dtype", args.dtype)) if v is not None})
    return LaViBridge.from_bridge(bridge_dir, **overrides)


def image_filename(index: int, prompt: str) -> str:
    """``000_a-red-circle.png``: ordered and readable."""
    slug = re.sub(r"[^a-z0-9]+", "-", prompt.lower()).strip("-")[:60] or "prompt"
    return f"{index:03d}_{slug}.png"


def run_infer(args: argparse.Namespace) -> list[Path]:
    """Load base models + bridge and write one PNG per prompt; returns the paths (an image with
    non-finite pixels is refused by ``LaViBridge.infer`` before it is written)."""
    from tqdm import tqdm

    if args.negative_prompt and args.guidance <= 1:  # the pipelines would drop it without a word
        raise ValueError(f"--negative-prompt is used only with --guidance > 1 (classifier-free guidance), got "
                         f"--guidance {args.guidance}")
    bridge_dir = resolve_bridge_dir(args.bridge)
    out_dir = Path(args.out)
    refuse_to_overwrite((out_dir / image_filename(i, p) for i, p in enumerate(args.prompts)), args.overwrite)
    device = resolve_device(args.device)
    writable_folder(out_dir, "--out")
    model = load_bridge_model(args, bridge_dir).to(device).eval()
    written = []
    for index, prompt in enumerate(tqdm(args.prompts, desc="generating", unit="image")):
        # one prompt at a time with the same seed: an image depends on its prompt and seed only
        image = model.infer(prompt, negative_prompt=args.negative_prompt,
                            num_inference_steps=args.steps, guidance_scale=args.guidance,
                            height=args.height, width=args.width, seed=args.seed,
                            scheduler=args.scheduler)[0]
        path = out_dir / image_filename(index, prompt)
        with whole_file(path) as partial:
            image.save(partial)
        written.append(path)
    print(f"wrote {len(written)} image(s) to {out_dir}")
    return written
