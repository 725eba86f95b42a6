"""``diffengine shapesbench``: does a trained bridge follow the text? Measured on ShapesBench.

``stage1`` trains the small "pretrained" text-to-image model (VAE, then UNet + its own text
encoder) with the configs ``autoencoder_kl_shapes_32`` and ``stable_diffusion_shapes_32``.
``run`` bridges language models that never saw the world to that frozen model with the LaVi-Bridge
configs, and scores every row on the held-out prompts. ``probe`` reads the attributes back from
each language model's frozen states, layer by layer, with no image involved.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import time
from pathlib import Path

from ..constants import PRETRAINED_FOLDER, SHAPESBENCH_GUIDANCE, SHAPESBENCH_STEPS
from ..file_writes import filled_folder, whole_file, write_text_whole
from ..work_dirs import latest_model_folder
from .arguments import (
    add_cfg_options_argument,
    add_overwrite_argument,
    creatable_folder,
    positive_int,
    refuse_to_overwrite,
)

STAGE1_ASSET = Path(__file__).resolve().parents[1] / "assets" / "shapesbench_stage1"
STAGE1_SOURCE_FILE = "SOURCE.md"
STAGE1_COMMAND = "diffengine shapesbench stage1"
# the language models bridged: key -> (label in the tables, LaVi-Bridge config)
LANGUAGE_MODELS = {
    "minilm": ("all-MiniLM-L6-v2", "lavi_bridge_minilm_shapes"),
    "tinyllama": ("tiny Llama (pretrained here on text)", "lavi_bridge_tinyllama_shapes"),
}
README_START, README_END = "<!-- shapesbench:start -->", "<!-- shapesbench:end -->"
# the bridge configs' caption length, and readouts fit per layer and set
PROBE_MAX_LENGTH = 16
PROBE_SEEDS = 3


def add_shapesbench_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``diffengine shapesbench`` (argparse only: keeps ``--help`` fast)."""
    parser.add_argument("stage", choices=("stage1", "run", "probe"),
                        help="stage1: train the small text-to-image model the bridges use; "
                        "run: the benchmark (bridges, scores, docs); probe: how well the "
                        "attributes read back from each language model's frozen states")
    parser.add_argument("--data-dir", default="data/shapes",
                        help="shards and untrained models are written here (default data/shapes)")
    parser.add_argument("--work-dir", default="work_dirs/shapesbench",
                        help="one work dir per training run under this folder")
    parser.add_argument("--stage1-out", default=None,
                        help="stage1: where the trained model folder is written (default: "
                        "DATA_DIR/stage1)")
    parser.add_argument("--stage1", default=None, metavar="DIR",
                        help="run: the stage-1 model folder (default: the packaged one, made by "
                        f"`{STAGE1_COMMAND}`)")
    parser.add_argument("--language-models", nargs="+", choices=tuple(LANGUAGE_MODELS),
                        default=list(LANGUAGE_MODELS), help="run: which language models to bridge")
    parser.add_argument("--images-per-prompt", type=positive_int, default=4,
                        help="run: images scored per held-out prompt (default 4)")
    parser.add_argument("--seeds", type=positive_int, default=1,
                        help="run: training runs per row, seeded 0..N-1; rows report their mean with "
                        "intervals over runs, then prompts (default 1: the configs' own seed)")
    parser.add_argument("--iters", type=positive_int, default=None,
                        help="run: bridge training iterations instead of the configs' own")
    add_cfg_options_argument(parser, "run: config options for every bridge (floor, adapter only, full), "
                             "e.g. model.hidden_layer=1")
    parser.add_argument("--layers", nargs="+", type=int, default=None,
                        help="probe: the hidden layers to read (0: the token embeddings; -1, the "
                        "bridges' default: the final normed states); default every layer")
    parser.add_argument("--docs", default="docs",
                        help="run: where shapesbench.md/.json/.png are written, probe: "
                        "shapesbench_probe.md/.json (default docs)")
    parser.add_argument("--readme", default=None, metavar="README.md",
                        help="run: also replace the table between the shapesbench markers there")
    add_overwrite_argument(parser, "stage1: the --stage1-out folder")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def file_checksums(folder: Path) -> dict[str, str]:
    """SHA-256 of every weights file under ``folder``, by relative path (not in dot-folders: a
    write that a crash cut short, see ``file_writes``)."""
    return {str(relative): hashlib.sha256((folder / relative).read_bytes()).hexdigest()
            for relative in sorted(path.relative_to(folder) for path in folder.rglob("*.safetensors"))
            if not any(part.startswith(".") for part in relative.parts)}


def _train(config: str, work_dir: Path, *cfg_options: str):
    """Train ``config`` in-process into ``work_dir``; returns the runner."""
    from .train import run, train_arguments

    # a benchmark run starts over: earlier runs of the same row are replaced
    return run(train_arguments(config, "--work-dir", str(work_dir), "--overwrite", "--cfg-options",
                               f"experiment_name={work_dir.name}_{time.time_ns()}", *cfg_options),
               wds=True)


def _max_iters(config: str) -> int:
    """The iterations a packaged config trains for."""
    from mmengine.config import Config

    from .config_lookup import resolve_config

    return Config.fromfile(str(resolve_config(config))).train_cfg.max_iters


def run_stage1(args: argparse.Namespace) -> Path:
    """Train the stage-1 VAE, then its UNet + text encoder; write the model folder and its report."""
    from diffusers import AutoencoderKL

    from diffengine.evaluation.reconstruction import reconstruction_report

    from .shapes_assets import make_untrained_stage1, make_untrained_vae, write_shape_shards

    start = time.perf_counter()
    data, work = Path(args.data_dir).resolve(), Path(args.work_dir).resolve()
    out = Path(args.stage1_out or data / "stage1")
    if not out.is_symlink():  # `shapesbench run` links the packaged model there: replaced freely
        refuse_to_overwrite([out], args.overwrite)
    shards = write_shape_shards(data / "shards", 20480, progress=not args.no_progress)
    vae_dir = latest_model_folder(work / "stage1_vae", PRETRAINED_FOLDER)
    if vae_dir is None or vae_dir.name != f"iter_{_max_iters('autoencoder_kl_shapes_32')}":
        vae_init = make_untrained_vae(data / "untrained" / "vae")
        _train("autoencoder_kl_shapes_32", work / "stage1_vae", f"model.vae={vae_init}",
               f"train_dataloader.shards={shards}")
        vae_dir = latest_model_folder(work / "stage1_vae", PRETRAINED_FOLDER)
    else:
        print(f"reusing the finished VAE run {vae_dir}")
    stage1_init = make_untrained_stage1(data / "untrained" / "stage1", vae_dir)
    _train("stable_diffusion_shapes_32", work / "stage1_sd",
           f"model.text_encoder={stage1_init / 'text_encoder'}", f"model.vision_model={stage1_init}",
           f"train_dataloader.shards={shards}")
    if out.is_symlink():
        out.unlink()
    # the earlier stage 1 stays whole until the new one, SOURCE.md included, is
    with filled_folder(out, STAGE1_SOURCE_FILE) as staging:
        shutil.copytree(latest_model_folder(work / "stage1_sd", PRETRAINED_FOLDER), staging, dirs_exist_ok=True)
        report = {"vae": reconstruction_report(AutoencoderKL.from_pretrained(staging / "vae")),
                  "minutes": round((time.perf_counter() - start) / 60, 1)}
        _write_stage1_source(staging, report)
    print(json.dumps(report, indent=2))
    print(f"stage 1 written to {out}")
    return out


def _write_stage1_source(out: Path, report: dict) -> None:
    """``SOURCE.md`` beside the weights: the command that made them, their checksums, the report."""
    checksums = "\n".join(f"{digest}  {name}" for name, digest in file_checksums(out).items())
    (out / STAGE1_SOURCE_FILE).write_text(
        "# ShapesBench stage 1: a small text-to-image model trained from scratch\n\n"
        f"Made by `{STAGE1_COMMAND}` (diffengine/tools/shapesbench.py): the VAE with the config "
        "`autoencoder_kl_shapes_32`, then the UNet and its own text encoder with "
        "`stable_diffusion_shapes_32`, on 20480 ShapesBench training images (32 px), on 2 CPU "
        f"cores in {report['minutes']} minutes, with {_code_revision()}. Training draws its noise "
        "from the code's random streams, so other code revisions give other (equivalent) weights.\n\n"
        f"VAE reconstruction of held-out renders: {json.dumps(report['vae'])}\n\n"
        "SHA-256 of the weights (`sha256sum -c` in this folder):\n\n"
        f"```\n{checksums}\n```\n")


def _code_revision() -> str:
    """``diffengine VERSION`` and, in a git checkout, its commit (``+changes`` when uncommitted)."""
    import subprocess

    from diffengine.version import __version__

    try:
        git = ["git", "-C", str(Path(__file__).parent)]
        commit = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = subprocess.run([*git, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return f"diffengine {__version__}"
    return f"diffengine {__version__} at commit {commit}{'+changes' if dirty else ''}"


def language_model_folder(key: str, data: Path, progress: bool = True) -> Path:
    """The folder of a benchmark language model: the installed MiniLM (linked as
    ``DATA_DIR/minilm``), or the tiny Llama pretrained here (once, in ``DATA_DIR/tiny_llama``)."""
    from .shapes_assets import installed_minilm, make_pretrained_tiny_llama

    if key == "minilm":
        folder = installed_minilm()
        _link_if_absent(data / "minilm", folder)  # the config's default path
        return folder
    return make_pretrained_tiny_llama(data / "tiny_llama", progress=progress)


def verify_stage1(folder: Path) -> None:
    """Check a stage-1 folder's weights against the checksums in its ``SOURCE.md``."""
    source = folder / STAGE1_SOURCE_FILE
    if not source.is_file():
        raise FileNotFoundError(f"{folder} has no {STAGE1_SOURCE_FILE}: not a stage-1 folder "
                                f"written by `{STAGE1_COMMAND}`")
    recorded = dict(line.split()[::-1] for line in source.read_text().splitlines()
                    if len(line.split()) == 2 and len(line.split()[0]) == 64)
    actual = file_checksums(folder)
    if recorded != actual:
        changed = sorted(set(recorded.items()) ^ set(actual.items()))
        raise ValueError(f"{folder}: weights do not match the checksums of {STAGE1_SOURCE_FILE} "
                         f"(e.g. {changed[0][0]})")


def _link_if_absent(link: Path, target: Path) -> None:
    """Point the configs' default model path (``data/shapes/...``) at ``target`` unless it exists."""
    if not link.exists() and not link.is_symlink():
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(target, target_is_directory=True)


def _build_untrained(config: str, *cfg_options: str):
    """The model a training run of ``config`` starts from (same seed): the floor row."""
    import torch

    from diffengine.registry import MODELS

    from .train import build_config, train_arguments

    cfg = build_config(train_arguments(config, "--cfg-options", *cfg_options), wds=True)
    torch.manual_seed(cfg.randomness.seed)
    return MODELS.build(cfg.model).eval()


def run_benchmark(args: argparse.Namespace) -> dict:
    """Ceiling, and per language model floor / adapter only / full bridge, scored on ShapesBench."""
    from diffengine.evaluation.shapes_benchmark import (
        evaluate_shapes,
        judge_accuracy,
        merge_runs,
        model_generator,
        prompt_sets,
    )
    from diffengine.models import LaViBridge, StableDiffusion
    from diffengine.work_dirs import resolve_bridge_dir

    from .shapes_assets import write_shape_shards

    start = time.perf_counter()
    data, work = Path(args.data_dir).resolve(), Path(args.work_dir).resolve()
    stage1 = Path(args.stage1).resolve() if args.stage1 else STAGE1_ASSET
    verify_stage1(stage1)
    creatable_folder(Path(args.docs), "--docs")  # written at the end, after the training
    if args.readme:
        _readme_around_table(Path(args.readme))
    bridge_options = [*([f"train_cfg.max_iters={args.iters}"] if args.iters else []), *args.cfg_options]
    for key in args.language_models:  # a bad option fails now, not after an hour of training
        _check_options(LANGUAGE_MODELS[key][1], *bridge_options)
    shards = write_shape_shards(data / "shards", 20480, progress=not args.no_progress)
    sets = prompt_sets()
    rows: dict[str, dict] = {}
    timings: dict[str, float] = {}

    def score(name: str, models) -> None:
        """Score a row: one model, or one per training run (``models`` yields them one at a time)."""
        began = time.perf_counter()
        rows[name] = merge_runs([evaluate_shapes(model_generator(model), args.images_per_prompt, sets=sets)
                                 for model in models])
        timings[f"score {name}"] = round(time.perf_counter() - began, 1)
        print(f"{name}: all three correct {rows[name]['new_phrasing']['all']['mean']:.3f} "
              f"(new phrasing), {rows[name]['new_combination']['all']['mean']:.3f} "
              "(new combination)", flush=True)

    # with several seeds, run s trains (and its floor starts) with randomness.seed=s
    seeds = [[f"randomness.seed={s}"] for s in range(args.seeds)] if args.seeds > 1 else [[]]
    _link_if_absent(data / "stage1", stage1)
    score("ceiling: stage-1 model, own text encoder", [StableDiffusion.from_pretrained(stage1)])
    for key in args.language_models:
        label, config = LANGUAGE_MODELS[key]
        lm = language_model_folder(key, data, progress=not args.no_progress)
        options = [f"model.text_encoder={lm}", f"model.vision_model={stage1}",
                   f"train_dataloader.shards={shards}", *bridge_options]
        score(f"{label}: floor (untrained adapter)",
              (_build_untrained(config, *options, *seed) for seed in seeds))
        for variant, extra in (("adapter only", ["model.text_lora.rank=0",
                                                 "model.vision_lora.rank=0"]),
                               ("LaVi-Bridge", [])):
            run_dirs = [work / f"{key}_{variant.replace(' ', '_').lower()}{f'_seed{s}' if seed else ''}"
                        for s, seed in enumerate(seeds)]
            began = time.perf_counter()
            for run_dir, seed in zip(run_dirs, seeds, strict=True):
                _train(config, run_dir, *options, *extra, *seed)
            timings[f"train {label}: {variant}"] = round(time.perf_counter() - began, 1)
            score(f"{label}: {variant}", (LaViBridge.from_bridge(resolve_bridge_dir(d)) for d in run_dirs))
    shown = stage1.relative_to(Path.cwd()) if stage1.is_relative_to(Path.cwd()) else stage1
    report = {"stage1": str(shown), "images_per_prompt": args.images_per_prompt, "seeds": args.seeds,
              "judge_on_heldout_renders": judge_accuracy(),
              "rows": {name: {k: v for k, v in result.items() if k != "records"}
                       for name, result in rows.items()},
              "seconds": timings, "minutes": round((time.perf_counter() - start) / 60, 1)}
    _write_docs(Path(args.docs), report, rows, sets, args.readme)
    return report


SET_TITLES = {"new_phrasing": "New phrasings (training triples, sentence structures never trained on)",
              "new_combination": "New combinations (triples never trained on, training phrasings)"}


def goal_lines(rows: dict[str, dict]) -> list[str]:
    """The issue's goal per language model and held-out set, as measured (met or not)."""
    ceiling = next(r for name, r in rows.items() if name.startswith("ceiling"))
    lines = []
    for name, result in rows.items():
        if not name.endswith(": LaVi-Bridge"):
            continue
        label = name.removesuffix(": LaVi-Bridge")
        adapter_only = rows[f"{label}: adapter only"]
        for set_name in SET_TITLES:
            full, top, ablation = (r[set_name]["all"] for r in (result, ceiling, adapter_only))
            ratio = full["mean"] / top["mean"] if top["mean"] else float("nan")
            beats = full["ci95"][0] > ablation["ci95"][1]
            lines.append(
                f"- {label}, {set_name.replace('_', ' ')}: full bridge at {100 * ratio:.0f} % of the "
                f"ceiling on all three ({'met' if ratio >= 0.9 else 'not met'}: goal 90 %); "
                f"{'beats' if beats else 'does not beat'} adapter only by more than the intervals "
                f"({100 * full['mean']:.1f} [{100 * full['ci95'][0]:.0f}-{100 * full['ci95'][1]:.0f}] "
                f"vs {100 * ablation['mean']:.1f} [{100 * ablation['ci95'][0]:.0f}-"
                f"{100 * ablation['ci95'][1]:.0f}])")
    return lines


def _write_docs(docs: Path, report: dict, rows: dict[str, dict], sets: dict, readme: str | None) -> None:
    """``shapesbench.md``, ``.json`` and ``.png`` (prompts x rows) under ``docs``; the README's
    section between the shapesbench markers when ``readme`` is given."""
    from diffengine.evaluation.shapes_benchmark import format_table, sample_grid

    docs.mkdir(parents=True, exist_ok=True)
    write_text_whole(docs / "shapesbench.json", json.dumps(report, indent=2))
    picked = [(set_name, index) for set_name, prompts in sets.items()
              for index in range(0, len(prompts), len(prompts) // 4)][:8]
    grid = sample_grid({name: [result["records"][s][i]["image"] for s, i in picked]
                        for name, result in rows.items()},
                       [sets[s][i].text for s, i in picked])
    with whole_file(docs / "shapesbench.png") as partial:
        grid.save(partial)
    tables = "\n\n".join(f"**{title}**, accuracy in % (95 % interval):\n\n"
                          f"{format_table(report['rows'], set_name)}"
                          for set_name, title in SET_TITLES.items())
    judge = report["judge_on_heldout_renders"]
    runs = (f" Each bridge row is {report['seeds']} training runs (seeds 0 to {report['seeds'] - 1}): "
            "its mean, with intervals resampling runs, then prompts (the first run's images in the grid)."
            if report["seeds"] > 1 else
            " Each bridge row is one training run; its intervals resample prompts, not runs.")
    write_text_whole(
        docs / "shapesbench.md",
        "# ShapesBench: does a trained bridge follow the text?\n\n"
        f"Written by `diffengine shapesbench run` ({report['minutes']} minutes on this machine). "
        "Every row generates images for the held-out prompts "
        f"({report['images_per_prompt']} per prompt, UniPC, {SHAPESBENCH_STEPS} steps, guidance "
        f"{SHAPESBENCH_GUIDANCE:g}) and the judge "
        "reads colour, shape and background back from each image. Chance is 1/6 for the colour, "
        f"1/4 for the shape, 1/3 for the background.{runs}\n\n"
        f"{tables}\n\n## Goal\n\n" + "\n".join(goal_lines(report["rows"])) + "\n\n"
        "## Samples\n\nThe first image of eight held-out prompts per row:\n\n"
        "![ShapesBench samples](shapesbench.png)\n\n"
        "## How it is measured\n\n"
        f"- Judge accuracy on {judge['images']} ground-truth renders of the held-out triples: "
        f"colour {100 * judge['color']:.1f} %, shape {100 * judge['shape']:.1f} %, background "
        f"{100 * judge['background']:.1f} %.\n"
        f"- Stage 1: `{report['stage1']}` (see its SOURCE.md).\n"
        f"- Seconds spent: {json.dumps(report['seconds'])}\n")
    if readme:
        head, tail = _readme_around_table(Path(readme))
        write_text_whole(readme, f"{head}{README_START}\n{tables}\n\n"
                                 f"![ShapesBench samples]({docs.as_posix()}/shapesbench.png)\n"
                                 f"{README_END}{tail}")
    print(f"wrote {docs}/shapesbench.md, .json and .png")


def _readme_around_table(readme: Path) -> tuple[str, str]:
    """The README's text before and after its shapesbench section (markers excluded)."""
    text = readme.read_text()
    if README_START not in text or README_END not in text:
        raise ValueError(f"{readme} has no {README_START} ... {README_END} section to replace")
    head, rest = text.split(README_START, 1)
    return head, rest.split(README_END, 1)[1]


def _check_options(config: str, *cfg_options: str) -> None:
    """Raise ConfigError for a bad ``--cfg-options`` or ``--iters`` on ``config``, before any training."""
    from .train import build_config, check_resolved_config, train_arguments

    options = ["--cfg-options", *cfg_options] if cfg_options else []
    check_resolved_config(build_config(train_arguments(config, *options), wds=True))


def run_probe(args: argparse.Namespace) -> dict:
    """``diffengine shapesbench probe``: the language models' readout accuracy per hidden layer."""
    from transformers import AutoConfig

    from diffengine.evaluation.language_probe import probe_language_model
    from diffengine.models.language import LanguageModel

    data, rows, plan = Path(args.data_dir).resolve(), {}, []
    creatable_folder(Path(args.docs), "--docs")
    for key in args.language_models:  # every layer checked before the first is probed
        label, _ = LANGUAGE_MODELS[key]
        folder = language_model_folder(key, data, progress=not args.no_progress)
        count = AutoConfig.from_pretrained(folder).num_hidden_layers
        wrong = [layer for layer in args.layers or [] if not -1 <= layer <= count]
        if wrong:
            raise ValueError(f"--layers {wrong[0]}: {label} has hidden layers 0..{count} (and -1)")
        plan.append((label, folder, args.layers or [*range(count), -1]))
    for label, folder, layers in plan:
        for layer in layers:
            lm = LanguageModel(str(folder), max_length=PROBE_MAX_LENGTH, hidden_layer=layer).eval()
            rows[f"{label}, layer {layer}"] = result = probe_language_model(lm, seeds=PROBE_SEEDS)
            print(f"{label}, layer {layer}: all three {100 * result['new_phrasing']['all']:.1f} % (new "
                  f"phrasing), {100 * result['new_combination']['all']:.1f} % (new combination), "
                  f"{100 * result['leave_one_phrasing_out']['all']:.1f} % (training phrasings, one left out)",
                  flush=True)
    docs = Path(args.docs)
    docs.mkdir(parents=True, exist_ok=True)
    write_text_whole(docs / "shapesbench_probe.json", json.dumps(rows, indent=1) + "\n")
    write_text_whole(docs / "shapesbench_probe.md", probe_markdown(rows))
    print(f"wrote {docs}/shapesbench_probe.md and .json")
    return rows


def probe_markdown(rows: dict[str, dict]) -> str:
    """The probe's table: "all three" (range over readouts) and per attribute, per set."""
    sets = ("new_phrasing", "new_combination", "leave_one_phrasing_out")
    lines = ["# ShapesBench probe: what the frozen language models' states say", "",
             "Written by `diffengine shapesbench probe`. No image is involved: per attribute, a readout "
             "(a learned query attending over the caption's token states, then a linear classifier) is "
             "fit on the training captions (training triples x training phrasings) and tested on every "
             "training triple in every held-out phrasing (`new_phrasing`), every held-out triple in every "
             "training phrasing (`new_combination`), and, from training captions only, on each training "
             "phrasing after fitting on the other three (`leave_one_phrasing_out`). Layer 0 is the "
             "token embeddings; -1 the final normed states, which the bridges use.", "",
             f"Each cell: \"all three correct\" in %, mean of {PROBE_SEEDS} readouts (range; for "
             "`leave_one_phrasing_out` the four left-out phrasings); then colour / shape / background.", "",
             "| language model, layer | " + " | ".join(sets) + " |", "|---|---|---|---|"]
    for name, result in rows.items():
        cells = [f"{100 * result[s]['all']:.1f} ({100 * result[s]['all_min']:.0f}-"
                 f"{100 * result[s]['all_max']:.0f}); " + " / ".join(
                     f"{100 * result[s][a]:.0f}" for a in ("color", "shape", "background")) for s in sets]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# the options each stage reads, besides --data-dir and --no-progress
STAGE_OPTIONS = {
    "stage1": {"work_dir", "stage1_out", "overwrite"},
    "run": {"work_dir", "stage1", "language_models", "images_per_prompt", "seeds", "iters", "cfg_options",
            "docs", "readme"},
    "probe": {"language_models", "layers", "docs"},
}


def _refuse_other_stages_options(args: argparse.Namespace) -> None:
    """Raise ValueError for an option given to a stage that does not read it (it would be ignored)."""
    parser = argparse.ArgumentParser()
    add_shapesbench_arguments(parser)
    for stage, options in STAGE_OPTIONS.items():
        for option in sorted(options - STAGE_OPTIONS[args.stage]):
            if getattr(args, option) != parser.get_default(option):
                raise ValueError(f"--{option.replace('_', '-')} is an option of `shapesbench {stage}`, "
                                 f"not of {args.stage}: it would be ignored")


def run_shapesbench(args: argparse.Namespace) -> None:
    """``diffengine shapesbench STAGE``."""
    _refuse_other_stages_options(args)
    if args.stage == "stage1":
        run_stage1(args)
    elif args.stage == "probe":
        run_probe(args)
    else:
        run_benchmark(args)
