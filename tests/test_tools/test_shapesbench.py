import json

import pytest

from diffengine.entry_point import main
from diffengine.tools import shapes_assets
from diffengine.tools.shapes_assets import make_pretrained_tiny_llama
from diffengine.tools.shapesbench import goal_lines


@pytest.mark.slow
def test_benchmark_run_writes_the_table_grid_json_and_readme(tmp_path, monkeypatch):
    # 2 iterations of batch 64 read 128 of the benchmark's 20480 training images: write 256
    write_shards = shapes_assets.write_shape_shards
    monkeypatch.setattr(shapes_assets, "write_shape_shards",
                        lambda out_dir, num_images, **kwargs: write_shards(out_dir, 256, **kwargs))
    data, docs, readme = tmp_path / "data", tmp_path / "docs", tmp_path / "README.md"
    make_pretrained_tiny_llama(data / "tiny_llama", steps=20, progress=False)
    readme.write_text("intro\n<!-- shapesbench:start -->\nold\n<!-- shapesbench:end -->\nrest\n")
    assert main(["shapesbench", "run", "--data-dir", str(data), "--work-dir", str(tmp_path / "work"),
                 "--language-models", "tinyllama", "--iters", "2", "--images-per-prompt", "1", "--seeds", "2",
                 "--docs", str(docs), "--readme", str(readme), "--no-progress"]) == 0
    report = json.loads((docs / "shapesbench.json").read_text())
    label = "tiny Llama (pretrained here on text)"
    assert list(report["rows"]) == ["ceiling: stage-1 model, own text encoder",
                                    f"{label}: floor (untrained adapter)",
                                    f"{label}: adapter only", f"{label}: LaVi-Bridge"]
    # each bridge row (floor included) is two training runs, seeded 0 and 1; the ceiling is one model
    for name, row in report["rows"].items():
        runs = 1 if name.startswith("ceiling") else 2
        assert row["new_phrasing"]["images"] == 24 * runs and row["new_combination"]["images"] == 28 * runs
        assert row["new_phrasing"]["prompts"] == 24 and len(row.get("runs", [None])) == runs
    assert min(report["judge_on_heldout_renders"][a] for a in ("color", "shape", "background")) >= 0.98
    text = (docs / "shapesbench.md").read_text()
    assert "| ceiling: stage-1 model, own text encoder |" in text and "## Goal" in text
    assert (docs / "shapesbench.png").stat().st_size > 0
    updated = readme.read_text()
    assert updated.startswith("intro\n") and updated.endswith("rest\n") and "old" not in updated
    assert f"| {label}: LaVi-Bridge |" in updated
    assert "Each bridge row is 2 training runs (seeds 0 to 1)" in text
    # the adapter-only bridges have no LoRA folders; the full ones have both; each run its own seed
    bridges = {d.name: d / "bridge" / (d / "bridge" / "last_bridge").read_text()
               for d in (tmp_path / "work").iterdir()}
    assert sorted(bridges) == [f"tinyllama_{v}_seed{s}" for v in ("adapter_only", "lavi-bridge") for s in (0, 1)]
    assert not (bridges["tinyllama_adapter_only_seed1"] / "vision_lora").exists()
    assert (bridges["tinyllama_lavi-bridge_seed1"] / "vision_lora").is_dir()
    adapters = [(bridges[f"tinyllama_lavi-bridge_seed{s}"] / "adapter" / "diffusion_pytorch_model.safetensors")
                .read_bytes() for s in (0, 1)]
    assert adapters[0] != adapters[1]


def test_goal_lines_report_the_measured_figures():
    def row(mean, low, high):
        summary = {"all": {"mean": mean, "ci95": [low, high]}}
        return {"new_phrasing": summary, "new_combination": summary}

    rows = {"ceiling: x": row(0.8, 0.7, 0.9), "lm: floor (untrained adapter)": row(0.0, 0.0, 0.0),
            "lm: adapter only": row(0.5, 0.4, 0.6), "lm: LaVi-Bridge": row(0.76, 0.65, 0.85)}
    lines = goal_lines(rows)
    assert len(lines) == 2
    assert "at 95 % of the ceiling on all three (met" in lines[0]
    assert "beats adapter only by more than the intervals (76.0 [65-85] vs 50.0 [40-60])" in lines[0]
    rows["lm: adapter only"] = row(0.7, 0.6, 0.8)
    assert "does not beat" in goal_lines(rows)[1]


@pytest.mark.parametrize("stage_args, expected", [
    (["stage1", "--stage1-out", "{tmp}"], "already exist(s): not overwriting (--overwrite replaces)"),
    (["run", "--readme", "{tmp}/no_markers.md"], "no_markers.md has no <!-- shapesbench:start -->"),
    (["stage1", "--iters", "50"], "--iters is an option of `shapesbench run`, not of stage1: it would be ignored"),
    (["probe", "--cfg-options", "model.hidden_layer=1"],
     "--cfg-options is an option of `shapesbench run`, not of probe"),
    (["run", "--cfg-options", "model.hiden_layer=1"],
     "model.hiden_layer: LaViBridge has no option 'hiden_layer' (did you mean 'hidden_layer'?)"),
])
def test_bad_inputs_are_refused_before_any_compute(stage_args, expected, tmp_path, capsys, monkeypatch):
    # nothing may be written or trained before the refusal
    monkeypatch.setattr(shapes_assets, "write_shape_shards", lambda *a, **k: pytest.fail("computed"))
    (tmp_path / "no_markers.md").write_text("a README without the section\n")
    argv = ["shapesbench", *[a.format(tmp=tmp_path) for a in stage_args], "--data-dir", str(tmp_path / "data")]
    assert main(argv) == 2
    assert expected in capsys.readouterr().err
    assert (tmp_path / "no_markers.md").is_file() and not (tmp_path / "data").exists()


def test_probe_checks_every_layer_before_probing_into_a_fresh_data_dir(tmp_path, capsys, monkeypatch):
    from diffengine.evaluation import language_probe

    monkeypatch.setattr(language_probe, "probe_language_model", lambda *a, **k: pytest.fail("probed"))
    data = tmp_path / "fresh" / "shapes"  # its parent does not exist yet either
    assert main(["shapesbench", "probe", "--language-models", "minilm", "--layers", "0", "99", "--data-dir",
                 str(data), "--docs", str(tmp_path / "docs")]) == 2
    assert capsys.readouterr().err.strip().startswith("diffengine: error: --layers 99: ")
    assert (data / "minilm" / "config.json").is_file()  # the configs' default path, linked
    assert not (tmp_path / "docs").exists()
