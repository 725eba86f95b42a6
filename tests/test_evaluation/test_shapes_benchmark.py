import json

import numpy as np
from PIL import Image

from diffengine.datasets.shapes import HELDOUT_PHRASINGS, TRAIN_PHRASINGS, heldout_specs, render, train_specs
from diffengine.entry_point import main
from diffengine.evaluation.shapes_benchmark import (
    SCORES,
    evaluate_shapes,
    format_table,
    merge_runs,
    prompt_sets,
    sample_grid,
    summarize,
    training_prompts,
)


def test_prompt_sets_hold_out_phrasings_and_combinations_separately():
    sets = prompt_sets()
    assert {p.phrasing for p in sets["new_phrasing"]} == set(HELDOUT_PHRASINGS)
    assert {p.spec for p in sets["new_phrasing"]} <= set(train_specs())
    assert {p.spec for p in sets["new_combination"]} == set(heldout_specs())
    assert {p.phrasing for p in sets["new_combination"]} <= set(TRAIN_PHRASINGS)
    assert len(sets["new_phrasing"]) == 24 and len(sets["new_combination"]) == 28
    assert len({p.text for p in sets["new_phrasing"]}) == 24


def test_training_prompts_are_training_captions_only():
    prompts = training_prompts()
    assert {p.spec for p in prompts} <= set(train_specs()) and {p.phrasing for p in prompts} == set(TRAIN_PHRASINGS)
    assert len({p.text for p in prompts}) == len(prompts) == 48


def test_eval_scores_the_training_prompts_alone(bridge_dir, tiny_sd, tmp_path, capsys):
    import shutil

    from diffengine.constants import BRIDGE_FOLDER
    from diffengine.work_dirs import latest_pointer, model_folder

    # a work dir: its newest bridge is scored, and the JSON says which
    work_dir = tmp_path / "work"
    for iteration in (1, 2):
        shutil.copytree(bridge_dir, model_folder(work_dir, BRIDGE_FOLDER, iteration))
    latest_pointer(work_dir, BRIDGE_FOLDER).write_text("iter_2")
    out = tmp_path / "fit.json"
    assert main(["eval", str(work_dir), "--benchmark", "shapes", "--training-prompts", "--steps", "2",
                 "--images-per-prompt", "1", "--device", "cpu", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["training"]["prompts"] == 48 and "new_phrasing" not in result
    assert (result["model"], result["model_folder"]) == (str(work_dir), str(work_dir / BRIDGE_FOLDER / "iter_2"))
    captured = capsys.readouterr()
    assert "| training | color | shape | background | all |" in captured.out
    # this bridge's base is a random tiny model, not stage 1: scored, with a warning and the record
    assert result["stage1_verified"] is False and result["vision_model"] == str(tiny_sd)
    assert f"diffengine: warning: {tiny_sd} has no SOURCE.md: not a stage-1 folder" in captured.err


def test_eval_of_the_stage1_model_itself_is_verified_silently(tmp_path, capsys):
    from diffengine.tools.shapesbench import STAGE1_ASSET

    out = tmp_path / "stage1.json"
    assert main(["eval", str(STAGE1_ASSET), "--benchmark", "shapes", "--training-prompts", "--steps", "1",
                 "--images-per-prompt", "1", "--device", "cpu", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["stage1_verified"] is True and result["vision_model"] == str(STAGE1_ASSET)
    assert (result["model_folder"], result["iteration"], result["seed"], result["dtype"]) == (
        str(STAGE1_ASSET.resolve()), None, 0, "float32")
    assert "warning" not in capsys.readouterr().err


def oracle(prompts_by_text):
    """A generator that draws exactly what each prompt asks for."""
    def generate(texts, seed):
        rng = np.random.default_rng(seed)
        return [render(prompts_by_text[t].spec, 32, rng)[0] for t in texts]
    return generate


def small_sets():
    sets = prompt_sets()
    return {name: prompts[:6] for name, prompts in sets.items()}


def test_an_oracle_scores_100_and_a_prompt_blind_generator_near_chance():
    sets = small_sets()
    by_text = {p.text: p for prompts in sets.values() for p in prompts}
    perfect = evaluate_shapes(oracle(by_text), images_per_prompt=2, sets=sets)
    for name in sets:
        assert perfect[name]["all"] == {"mean": 1.0, "ci95": [1.0, 1.0]}
        assert perfect[name]["images"] == 12 and perfect[name]["prompts"] == 6
    fixed = render(sets["new_phrasing"][0].spec, 32, np.random.default_rng(0))[0]
    blind = evaluate_shapes(lambda texts, seed: [fixed] * len(texts), images_per_prompt=1, sets=sets)
    assert blind["new_combination"]["all"]["mean"] <= 0.2


def test_intervals_are_a_bootstrap_over_prompts():
    # prompt 0 always right, prompt 1 always wrong: the mean is 0.5 and the interval wide
    records = [{"prompt": p, **{f"{s}_correct": p == 0 for s in ("color", "shape", "background",
                                                                  "all")}}
               for p in (0, 1) for _ in range(10)]
    summary = summarize(records)
    assert summary["all"]["mean"] == 0.5
    low, high = summary["all"]["ci95"]
    assert low == 0.0 and high == 1.0
    assert summary["images"] == 20 and summary["prompts"] == 2


def test_runs_are_resampled_before_prompts():
    # run 0 gets every prompt right, run 1 every prompt wrong: within a run prompts agree, so only
    # resampling the runs shows that another run could score anywhere from 0 to 1
    records = [{"prompt": p, "run": run, **{f"{s}_correct": run == 0 for s in SCORES}}
               for run in (0, 1) for p in range(20) for _ in range(2)]
    summary = summarize(records)
    assert summary["all"]["mean"] == 0.5 and summary["all"]["ci95"] == [0.0, 1.0]
    assert summary["images"] == 80 and summary["prompts"] == 20
    pooled = summarize([{k: v for k, v in r.items() if k != "run"} for r in records])
    assert pooled["all"]["ci95"] == [0.5, 0.5]  # as if one run: the spread is invisible


def test_merged_runs_keep_each_runs_summary_and_the_first_runs_records_first():
    sets = small_sets()
    by_text = {p.text: p for prompts in sets.values() for p in prompts}
    perfect = evaluate_shapes(oracle(by_text), images_per_prompt=1, sets=sets)
    fixed = render(sets["new_phrasing"][0].spec, 32, np.random.default_rng(0))[0]
    blind = evaluate_shapes(lambda texts, seed: [fixed] * len(texts), images_per_prompt=1, sets=sets)
    merged = merge_runs([perfect, blind])
    assert merge_runs([perfect]) is perfect
    assert [run["new_phrasing"]["all"]["mean"] for run in merged["runs"]] == [
        perfect["new_phrasing"]["all"]["mean"], blind["new_phrasing"]["all"]["mean"]]
    records = merged["records"]["new_combination"]
    assert [r["run"] for r in records] == [0] * 6 + [1] * 6 and records[0]["image"] is perfect[
        "records"]["new_combination"][0]["image"]
    assert merged["new_combination"]["images"] == 12 and merged["new_combination"]["prompts"] == 6
    assert merged["new_combination"]["all"]["ci95"][0] <= blind["new_combination"]["all"]["mean"]


def test_table_and_grid():
    sets = small_sets()
    by_text = {p.text: p for prompts in sets.values() for p in prompts}
    result = evaluate_shapes(oracle(by_text), images_per_prompt=1, sets=sets)
    table = format_table({"oracle": result}, "new_phrasing")
    assert "| oracle | 100.0 (100-100) |" in table
    images = [r["image"] for r in result["records"]["new_phrasing"][:3]]
    grid = sample_grid({"oracle": images, "again": images}, ["a", "b", "c"], scale=2,
                       label_width=50)
    assert isinstance(grid, Image.Image) and grid.width == 50 + 3 * 64
