"""``diffengine eval``: score a bridge (or a Stable Diffusion folder) on ShapesBench or by CLIP score."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..constants import BRIDGE_MANIFEST, MAX_SEED, SHAPESBENCH_GUIDANCE, SHAPESBENCH_STEPS
from ..file_writes import write_text_whole
from ..work_dirs import resolve_bridge_dir
from .arguments import (
    add_overwrite_argument,
    non_negative_float,
    positive_int,
    resolve_device,
    seed,
    writable_file,
)
from .infer import add_base_model_arguments, load_bridge_model

BENCHMARKS = ("shapes",)
METRICS = ("clip_score",)


CLIP_BATCH_SIZE = 16  # prompts per generation call of clip_score


def add_eval_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``diffengine eval`` (argparse only: keeps ``--help`` fast)."""
    parser.add_argument("model", metavar="BRIDGE_OR_WORK_DIR",
                        help="a bridge folder, a work dir (its newest bridge), or a diffusers "
                        "Stable Diffusion folder with its own text encoder (ShapesBench's stage 1)")
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--benchmark", choices=BENCHMARKS,
                      help="shapes: attribute accuracy on ShapesBench's held-out prompts")
    what.add_argument("--metric", choices=METRICS,
                      help="clip_score: CLIP score of images for the prompts of --prompts")
    parser.add_argument("--clip-model", default=None, metavar="PATH",
                        help="a local CLIPModel folder (model, tokenizer, image processor)")
    parser.add_argument("--prompts", default=None, metavar="FILE",
                        help="clip_score: a text file, one prompt per line")
    parser.add_argument("--images-per-prompt", type=positive_int, default=4)
    parser.add_argument("--batch-size", type=positive_int, default=None,
                        help=f"clip_score: prompts generated and scored together (default {CLIP_BATCH_SIZE}; "
                        "memory grows with it; each batch's images are drawn from one generator seeded seed + j)")
    parser.add_argument("--training-prompts", action="store_true",
                        help="shapes: score 48 training prompts (training triples and phrasings) "
                        "instead of the held-out sets: fit, measured without looking at them")
    parser.add_argument("--steps", type=positive_int, default=SHAPESBENCH_STEPS,
                        help=f"denoising steps (default {SHAPESBENCH_STEPS})")
    parser.add_argument("--guidance", type=non_negative_float, default=SHAPESBENCH_GUIDANCE,
                        help=f"classifier-free guidance scale (default {SHAPESBENCH_GUIDANCE})")
    parser.add_argument("--seed", type=seed, default=0, help="image j of a prompt uses seed + j")
    parser.add_argument("--out", default=None, metavar="FILE.json", help="also write the scores here")
    add_overwrite_argument(parser, "the --out file")
    parser.add_argument("--device", default=None, help="cuda, cpu, ... (default: cuda if available)")
    add_base_model_arguments(parser)


def is_pipeline_folder(path: Path) -> bool:
    """A diffusers text-to-image folder (ShapesBench's stage 1), not a bridge."""
    return (path / "model_index.json").is_file() and not (path / BRIDGE_MANIFEST).is_file()


def scored_folder(model: str) -> Path:
    """The folder ``eval MODEL`` scores: a Stable Diffusion folder, or the bridge folder (of a
    work dir: its newest)."""
    path = Path(model)
    return path if is_pipeline_folder(path) else resolve_bridge_dir(path)


def load_text_to_image_model(args: argparse.Namespace, folder: Path):
    """A ``LaViBridge`` for a bridge folder, a ``StableDiffusion`` for an SD folder."""
    if is_pipeline_folder(folder):
        from diffengine.models import StableDiffusion

        return StableDiffusion.from_pretrained(folder)
    return load_bridge_model(args, folder)


def _provenance(args: argparse.Namespace, folder: Path, model, device: str) -> dict:
    """What the scores are of and how the images were made, for the JSON: the folder a work dir
    resolved to (and the bridge's iteration), the sampler's settings, seed, device and dtype."""
    from diffengine.models.editors.lavi_bridge.lavi_bridge import read_bridge_manifest

    iteration = None if is_pipeline_folder(folder) else read_bridge_manifest(folder).get("iteration")
    config = getattr(model, "bridge_config", {})
    return {"model": args.model, "model_folder": str(folder.resolve()), "iteration": iteration,
            "steps": args.steps, "guidance": args.guidance, "seed": args.seed,
            "images_per_prompt": args.images_per_prompt, "device": device,
            # a Stable Diffusion folder trains and samples in float32
            "dtype": config.get("weight_dtype", "float32")}


def _check_inputs(args: argparse.Namespace) -> None:
    """One-line errors for bad options, before any model loads."""
    ignored = [option for option, value in (("--prompts", args.prompts), ("--clip-model", args.clip_model),
                                            ("--batch-size", args.batch_size))
               if value is not None and args.benchmark == "shapes"]
    if ignored:
        raise ValueError(f"{' and '.join(ignored)}: for --metric clip_score; --benchmark shapes scores "
                         "ShapesBench's own prompts with its judge")
    pipeline_class = (json.loads((Path(args.model) / "model_index.json").read_text()).get("_class_name")
                      if is_pipeline_folder(Path(args.model)) else None)
    if pipeline_class not in (None, "StableDiffusionPipeline"):
        # loaded as Stable Diffusion, an export's adapter and LoRA would be left out, and its bare
        # base models scored where the widths happen to fit
        exported = "; score the bridge folder (or work dir) it was exported from" \
            if pipeline_class == "LaViBridgePipeline" else ""
        raise ValueError(f"{args.model} is a {pipeline_class} folder: eval scores bridge folders, work dirs and "
                         f"StableDiffusionPipeline folders{exported}")
    ignored = [option for option, value in (("--text-encoder", args.text_encoder),
                                            ("--vision-model", args.vision_model), ("--dtype", args.dtype))
               if value is not None and is_pipeline_folder(Path(args.model))]
    if ignored:
        raise ValueError(f"{' and '.join(ignored)}: rebuild a bridge's base models; {args.model} is a "
                         "diffusers pipeline folder, loaded whole")
    if args.seed + args.images_per_prompt - 1 > MAX_SEED:
        raise ValueError(f"--seed {args.seed}: image j of a prompt uses seed + j, and seed + "
                         f"{args.images_per_prompt - 1} is above 2**64 - 1 ({MAX_SEED})")
    if args.metric == "clip_score":
        from diffengine.evaluation.clip_score import CLIP_MODEL_HELP, check_clip_folder

        if args.training_prompts:
            raise ValueError("--training-prompts chooses ShapesBench's prompts (--benchmark shapes); "
                             "clip_score reads its prompts from --prompts")
        if args.clip_model is None:
            raise FileNotFoundError(f"--clip-model is required. {CLIP_MODEL_HELP}")
        check_clip_folder(args.clip_model)
        if args.prompts is None or not Path(args.prompts).is_file():
            raise FileNotFoundError("--metric clip_score needs --prompts FILE (one prompt per line)"
                                    + (f"; {args.prompts} is not a file" if args.prompts else ""))
        read_prompts(args.prompts)


def read_prompts(path: str) -> list[str]:
    """The non-empty lines of a prompt file; ValueError when there is none."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(f"{path} is not UTF-8 text ({error.reason} at byte {error.start}): save the prompt "
                         "file as UTF-8") from None
    prompts = [line.strip() for line in text.splitlines() if line.strip()]
    if not prompts:
        raise ValueError(f"{path} holds no prompt")
    return prompts


def run_eval(args: argparse.Namespace) -> dict:
    """Score the model; print a table and return (and optionally write) the scores."""

    _check_inputs(args)
    if args.out:
        writable_file(Path(args.out), args.overwrite)
    device = resolve_device(args.device)
    folder = scored_folder(args.model)
    model = load_text_to_image_model(args, folder).to(device).eval()
    scores = _shapes(model, args) if args.benchmark == "shapes" else _clip_score(model, args, device)
    result = {**_provenance(args, folder, model, device), **scores}
    if args.out:
        write_text_whole(args.out, json.dumps(result, indent=2))
        print(f"wrote {args.out}")
    return result


def _shapes(model, args: argparse.Namespace) -> dict:
    from diffengine.evaluation.shapes_benchmark import (
        evaluate_shapes,
        format_table,
        model_generator,
        prompt_sets,
        training_prompts,
    )

    from .shapesbench import verify_stage1

    # a bridge's vision model, or the folder itself (stage 1 with its own text encoder)
    base = str(getattr(model, "vision_model_path", args.model))
    try:
        verify_stage1(Path(base))
        stage1 = True
    except (FileNotFoundError, ValueError) as error:
        stage1 = False
        print(f"diffengine: warning: {error}. ShapesBench's scores are comparable with its tables only for "
              "its stage-1 model (`diffengine shapesbench stage1`)", file=sys.stderr, flush=True)
    sets = {"training": training_prompts()} if args.training_prompts else prompt_sets()
    result = evaluate_shapes(model_generator(model, args.steps, args.guidance),
                             images_per_prompt=args.images_per_prompt, seed=args.seed, sets=sets)
    del result["records"]
    for name in sets:
        print(format_table({args.model: result}, name) + "\n")
    return {"benchmark": "shapes", "vision_model": base, "stage1_verified": stage1, **result}


def _clip_score(model, args: argparse.Namespace, device: str) -> dict:
    from diffengine.evaluation.clip_score import ClipScorer
    from diffengine.evaluation.statistics import bootstrap_mean

    prompts = read_prompts(args.prompts)
    scorer = ClipScorer(args.clip_model, device)
    per_prompt: list[list[float]] = [[] for _ in prompts]
    total, done = len(prompts) * args.images_per_prompt, 0
    batch_size = args.batch_size or CLIP_BATCH_SIZE
    for j in range(args.images_per_prompt):
        for start in range(0, len(prompts), batch_size):
            batch = prompts[start:start + batch_size]
            images = model.infer(batch, num_inference_steps=args.steps,
                                 guidance_scale=args.guidance, seed=args.seed + j)
            for index, score in enumerate(scorer(images, batch), start=start):
                per_prompt[index].append(float(score))
            done += len(batch)
            print(f"clip_score: {done}/{total} images scored", file=sys.stderr, flush=True)
    summary = bootstrap_mean(per_prompt)
    scores_by_prompt: dict[str, list[float]] = {}
    for prompt, scores in zip(prompts, per_prompt, strict=True):  # a repeated prompt keeps every score
        scores_by_prompt.setdefault(prompt, []).extend(scores)
    print(f"CLIP score {summary['mean']:.2f} (95 % interval {summary['ci95'][0]:.2f}-"
          f"{summary['ci95'][1]:.2f}) over {len(prompts)} prompts x {args.images_per_prompt} images")
    return {"metric": "clip_score", "clip_model": args.clip_model, "batch_size": batch_size,
            "clip_score": summary, "per_prompt": scores_by_prompt}
