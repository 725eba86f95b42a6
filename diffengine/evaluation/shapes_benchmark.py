"""ShapesBench scoring: generate images for held-out prompts, judge them, and report accuracies
with 95 % intervals.

Two held-out sets, reported separately: ``new_phrasing`` (training triples described in sentence
structures never trained on) and ``new_combination`` (triples never trained on, in training
phrasings). Intervals are percentile bootstraps over prompts: images of one prompt are not
independent draws, so resampling images would understate the uncertainty. A third set,
``training`` (training triples in training phrasings), measures fit without looking at either
held-out set, e.g. to choose a training length.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from diffengine.constants import SHAPESBENCH_GUIDANCE, SHAPESBENCH_STEPS
from diffengine.datasets.shapes import (
    ATTRIBUTES,
    HELDOUT_PHRASINGS,
    IMAGE_SIZE,
    TRAIN_PHRASINGS,
    ShapeSpec,
    heldout_specs,
    render,
    train_specs,
)

from .shapes_judge import judge_image
from .statistics import bootstrap_mean

SCORES: tuple[str, ...] = (*ATTRIBUTES, "all")


@dataclass(frozen=True)
class ShapesPrompt:
    """One held-out prompt: the triple it asks for and the phrasing it asks in."""

    spec: ShapeSpec
    phrasing: str

    @property
    def text(self) -> str:
        """The prompt's caption."""
        return self.spec.caption(self.phrasing)


def prompt_sets(triples_per_phrasing: int = 8, phrasings_per_triple: int = 2) -> dict[str, list[ShapesPrompt]]:
    """The two held-out prompt sets, fixed lists.

    ``new_phrasing``: each held-out phrasing with ``triples_per_phrasing`` training triples
    (spread evenly over them). ``new_combination``: each held-out triple in
    ``phrasings_per_triple`` training phrasings (taken in turn).
    """
    train = train_specs()
    new_phrasing = []
    for p, phrasing in enumerate(HELDOUT_PHRASINGS):
        for i in range(triples_per_phrasing):
            index = (p + i * len(HELDOUT_PHRASINGS)) * len(train) // (
                triples_per_phrasing * len(HELDOUT_PHRASINGS))
            new_phrasing.append(ShapesPrompt(train[index], phrasing))
    new_combination = [ShapesPrompt(spec, TRAIN_PHRASINGS[(t + j) % len(TRAIN_PHRASINGS)])
                       for t, spec in enumerate(heldout_specs())
                       for j in range(phrasings_per_triple)]
    return {"new_phrasing": new_phrasing, "new_combination": new_combination}


def training_prompts(count: int = 48) -> list[ShapesPrompt]:
    """``count`` training triples spread evenly over them, each in a training phrasing (in turn):
    captions a bridge was trained on."""
    train = train_specs()
    return [ShapesPrompt(train[i * len(train) // count], TRAIN_PHRASINGS[i % len(TRAIN_PHRASINGS)])
            for i in range(count)]


Generator = Callable[[list[str], int], list[Image.Image]]


def model_generator(model, num_inference_steps: int = SHAPESBENCH_STEPS,
                    guidance_scale: float = SHAPESBENCH_GUIDANCE) -> Generator:
    """``(prompts, seed) -> images`` from any model with an ``infer`` (``LaViBridge``,
    ``StableDiffusion``), with ShapesBench's sampler settings (UniPC, ``num_inference_steps``,
    classifier-free guidance ``guidance_scale``) at the world's image size.

    The size is given, not left to the pipeline: the judge is set for the world's size, and a
    pipeline's default is its family's native one (FluxPipeline's is 128 latent pixels).
    """
    def generate(prompts: list[str], seed: int) -> list[Image.Image]:
        return model.infer(prompts, num_inference_steps=num_inference_steps,
                           guidance_scale=guidance_scale, height=IMAGE_SIZE, width=IMAGE_SIZE,
                           seed=seed)
    return generate


def generate_and_judge(generate: Generator, prompts: list[ShapesPrompt],
                       images_per_prompt: int = 4, seed: int = 0) -> list[dict]:
    """One record per image: prompt index, its text and attributes, the judge's verdict, the image.

    Image ``j`` of every prompt comes from one ``generate`` call seeded ``seed + j``.
    """
    records = []
    texts = [p.text for p in prompts]
    for j in range(images_per_prompt):
        for index, (prompt, image) in enumerate(zip(prompts, generate(texts, seed + j), strict=True)):
            verdict = judge_image(image)
            correct = {a: verdict[a] == getattr(prompt.spec, a) for a in ATTRIBUTES}
            records.append({"prompt": index, "text": prompt.text, "expected": prompt.spec.as_dict(),
                            "judged": verdict, **{f"{a}_correct": c for a, c in correct.items()},
                            "all_correct": all(correct.values()), "image": image})
    return records


def summarize(records: list[dict], num_resamples: int = 2000, seed: int = 0) -> dict:
    """Accuracy of each attribute and of all three, with 95 % percentile-bootstrap intervals
    over prompts (over training runs, then prompts, for records of several runs, see
    ``merge_runs``): ``{"color": {"mean": 0.9, "ci95": [0.85, 0.95]}, ..., "images", "prompts"}``."""
    units = sorted({(r.get("run", 0), r["prompt"]) for r in records})
    summary: dict = {}
    for score in SCORES:
        per_prompt = [[float(r[f"{score}_correct"]) for r in records if (r.get("run", 0), r["prompt"]) == unit]
                      for unit in units]
        summary[score] = bootstrap_mean(per_prompt, num_resamples, seed, runs=[run for run, _ in units])
    summary["images"] = len(records)
    summary["prompts"] = len({prompt for _, prompt in units})
    return summary


def merge_runs(results: list[dict]) -> dict:
    """One ``evaluate_shapes`` result from those of several training runs of one row: records
    tagged with their run (run 0's first, so a record's index in run 0 stays its index), summaries
    over all of them, and each run's own summaries under ``runs``."""
    if len(results) == 1:
        return results[0]
    merged: dict = {"records": {}, "runs": [{k: v for k, v in r.items() if k != "records"} for r in results]}
    for name in results[0]["records"]:
        records = [{**record, "run": run} for run, result in enumerate(results)
                   for record in result["records"][name]]
        merged[name] = summarize(records)
        merged["records"][name] = records
    return merged


def evaluate_shapes(generate: Generator, images_per_prompt: int = 4, seed: int = 0,
                    sets: dict[str, list[ShapesPrompt]] | None = None) -> dict:
    """Score a generator on both held-out sets: ``{"new_phrasing": summary, "new_combination":
    summary, "records": {set: records}}`` (records keep the images, for grids)."""
    sets = prompt_sets() if sets is None else sets
    result: dict = {"records": {}}
    for name, prompts in sets.items():
        records = generate_and_judge(generate, prompts, images_per_prompt, seed)
        result[name] = summarize(records)
        result["records"][name] = records
    return result


def judge_accuracy(num_images: int = 1000, size: int = IMAGE_SIZE, seed: int = 11) -> dict[str, float]:
    """The judge's per-attribute accuracy on ground-truth renders of the held-out triples."""
    rng = np.random.default_rng(seed)
    specs = heldout_specs()
    correct = {a: 0 for a in ATTRIBUTES}
    for index in range(num_images):
        spec = specs[index % len(specs)]
        verdict = judge_image(render(spec, size, rng)[0])
        for attribute in ATTRIBUTES:
            correct[attribute] += verdict[attribute] == getattr(spec, attribute)
    return {a: correct[a] / num_images for a in ATTRIBUTES} | {"images": num_images}


def format_table(rows: dict[str, dict], set_name: str) -> str:
    """A Markdown table of ``{row name: evaluate_shapes result}`` for one held-out set."""
    lines = [f"| {set_name} | " + " | ".join(SCORES) + " |",
             "|---|" + "---|" * len(SCORES)]
    for name, result in rows.items():
        cells = []
        for score in SCORES:
            entry = result[set_name][score]
            low, high = entry["ci95"]
            cells.append(f"{100 * entry['mean']:.1f} ({100 * low:.0f}-{100 * high:.0f})")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def sample_grid(rows: dict[str, list[Image.Image]], captions: list[str], scale: int = 3,
                label_width: int = 150) -> Image.Image:
    """A grid with one row per model and one column per prompt, labelled, images upscaled."""
    first = next(iter(rows.values()))[0]
    cell = first.width * scale
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    header = max(len(_wrapped(probe, c, cell - 4)) for c in captions) * _LINE + 2
    grid = Image.new("RGB", (label_width + cell * len(captions), header + cell * len(rows)), "white")
    draw = ImageDraw.Draw(grid)
    for column, caption in enumerate(captions):
        for line_index, line in enumerate(_wrapped(draw, caption, cell - 4)):
            draw.text((label_width + column * cell + 2, line_index * _LINE), line, fill="black")
    for row, (name, images) in enumerate(rows.items()):
        top = header + row * cell
        lines = _wrapped(draw, name, label_width - 8)
        for line_index, line in enumerate(lines):
            draw.text((4, top + (cell - len(lines) * _LINE) // 2 + line_index * _LINE), line,
                      fill="black")
        for column, image in enumerate(images):
            grid.paste(image.resize((cell, cell), Image.Resampling.NEAREST),
                       (label_width + column * cell, top))
    return grid


_LINE = 12  # pixels per line of PIL's default font


def _wrapped(draw: ImageDraw.ImageDraw, text: str, width: int) -> list[str]:
    """``text`` broken into lines no wider than ``width`` pixels (at word boundaries)."""
    lines = [""]
    for word in text.split():
        candidate = f"{lines[-1]} {word}".strip()
        if lines[-1] and draw.textlength(candidate) > width:
            lines.append(word)
        else:
            lines[-1] = candidate
    return lines
