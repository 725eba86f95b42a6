import logging
import re
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from diffengine.entry_point import main
from diffengine.models import LaViBridge
from diffengine.models.language import tokenize_prompts, truncated_parts
from tests.helpers import fixed_batch


def pixels(path):
    return np.asarray(Image.open(path))


def test_from_bridge_rebuilds_the_model_from_its_manifest(tiny_bridge, bridge_dir):
    rebuilt = LaViBridge.from_bridge(bridge_dir)
    assert rebuilt.language.max_length == tiny_bridge.language.max_length
    assert rebuilt.text_lora_config.r == 4 and rebuilt.vision_lora_config.r == 4
    kwargs = dict(num_inference_steps=2, height=32, width=32, output_type="np", seed=3)
    np.testing.assert_array_equal(rebuilt.infer("a red circle", **kwargs),
                                  tiny_bridge.infer("a red circle", **kwargs))


def test_infer_writes_one_png_per_prompt_and_is_seeded(bridge_dir, tmp_path):
    prompts = ["a red circle on a white background", "a blue square"]
    common = ["--steps", "2", "--height", "32", "--width", "32"]
    assert main(["infer", str(bridge_dir), *prompts, *common, "--out", str(tmp_path / "a")]) == 0
    assert main(["infer", str(bridge_dir), *prompts, *common, "--out", str(tmp_path / "b")]) == 0
    assert main(["infer", str(bridge_dir), prompts[0], *common, "--seed", "5",
                 "--out", str(tmp_path / "c")]) == 0
    first = sorted((tmp_path / "a").glob("*.png"))
    assert [p.name for p in first] == ["000_a-red-circle-on-a-white-background.png",
                                       "001_a-blue-square.png"]
    assert pixels(first[0]).shape == (32, 32, 3)
    for path in first:
        np.testing.assert_array_equal(pixels(path), pixels(tmp_path / "b" / path.name))
    assert not np.array_equal(pixels(first[0]), pixels(tmp_path / "c" / first[0].name))


def test_infer_keeps_earlier_images_unless_overwritten(bridge_dir, tmp_path, capsys):
    args = ["infer", str(bridge_dir), "a red circle", "--steps", "1", "--height", "32", "--width", "32",
            "--out", str(tmp_path)]
    (tmp_path / "000_a-red-circle.png").write_bytes(b"an earlier image")
    assert main(args) == 2
    assert capsys.readouterr().err.strip() == (f"diffengine: error: {tmp_path}/000_a-red-circle.png already "
                                               "exist(s): not overwriting (--overwrite replaces)")
    assert main([*args, "--overwrite"]) == 0
    assert pixels(tmp_path / "000_a-red-circle.png").shape == (32, 32, 3)


def test_infer_accepts_a_moved_work_dir_and_rejects_other_folders(bridge_dir, tmp_path, capsys):
    work_dir = tmp_path / "work"
    shutil.copytree(bridge_dir, work_dir / "bridge" / "iter_1")
    (work_dir / "bridge" / "last_bridge").write_text("iter_1")
    moved = work_dir.rename(tmp_path / "moved")
    assert main(["infer", str(moved), "x", "--steps", "1", "--height", "32", "--width", "32",
                 "--out", str(tmp_path / "out")]) == 0
    assert len(list((tmp_path / "out").glob("*.png"))) == 1
    assert main(["infer", str(tmp_path / "out"), "x"]) == 2
    assert "neither a bridge folder" in capsys.readouterr().err
    (moved / "bridge" / "last_bridge").write_text("iter_9")  # stale: that bridge was pruned
    assert main(["infer", str(moved), "x"]) == 2
    assert "iter_9 is neither a bridge folder" in capsys.readouterr().err


def test_a_prompt_past_max_length_is_named_with_the_part_left_out(tiny_bridge, caplog):
    kwargs = dict(num_inference_steps=1, height=32, width=32, output_type="np")
    long_prompt = " ".join(["red"] * 15 + ["blue", "square"])
    with caplog.at_level("WARNING"):
        tiny_bridge.infer(["a red circle", long_prompt], **kwargs)
    warnings = [r for r in caplog.records if "max_length" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].args[0] == 16 and warnings[0].args[2] == long_prompt
    # what the LM reads, then the part named as ignored: the whole prompt
    tokenizer = tiny_bridge.language.tokenizer
    kept = tokenizer.decode(tokenize_prompts(tokenizer, [long_prompt], 16).input_ids[0], skip_special_tokens=True)
    assert kept != long_prompt and f"{kept} {warnings[0].args[1]}" == long_prompt



def test_training_warns_once_when_max_length_cuts_captions(tiny_t5, tiny_sd, monkeypatch):
    warnings = []
    monkeypatch.setattr("diffengine.models.language.language_model.print_log",
                        lambda message, **kwargs: warnings.append((message, kwargs["level"])))
    long_caption = " ".join(["red"] * 15 + ["blue", "square"])
    batch = fixed_batch(("a red circle", long_caption))
    model = LaViBridge(tiny_t5, tiny_sd, max_length=16)
    for _ in range(2):  # the first training batch only
        model(batch)
    part = truncated_parts(model.language.tokenizer, [long_caption], 16)[0]
    assert part and warnings == [(
        f"1 of the first batch's 2 captions are longer than max_length=16 tokens, and the language model "
        f"never reads their ends (e.g. {part!r} of {long_caption!r}): raise model.max_length", logging.WARNING)]
    LaViBridge(tiny_t5, tiny_sd, max_length=77)(batch)  # room for every caption: no warning
    assert len(warnings) == 1


@pytest.mark.parametrize("command", [["infer", "{bridge}", "a red circle", "--out", "{out}"],
                                     ["eval", "{bridge}", "--benchmark", "shapes", "--images-per-prompt", "1"]])
def test_a_diverged_bridges_non_finite_images_are_refused_not_saved_or_scored(command, bridge_dir, tmp_path, capsys):
    # finite weights so large that the adapter's output overflows: PIL would make black images of them
    adapter_file = bridge_dir / "adapter" / "diffusion_pytorch_model.safetensors"
    save_file({name: torch.full_like(value, 1e30) for name, value in load_file(adapter_file).items()}, adapter_file)
    argv = [arg.format(bridge=bridge_dir, out=tmp_path) for arg in command]
    assert main([*argv, "--steps", "1"]) == 1
    # every image of the first call (one prompt for infer, a ShapesBench prompt set for eval)
    assert re.fullmatch(
        r"diffengine: error: the model generated non-finite pixels in (\d+) of \1 image\(s\): its weights have "
        r"diverged \(a training whose loss went non-finite\?\), or a float16 VAE overflowed \(use bfloat16 or "
        r"float32\)", capsys.readouterr().err.strip().splitlines()[-1])
    assert not list(tmp_path.glob("*.png"))


@pytest.mark.parametrize("command", [["infer", "{bridge}", "a red circle", "--out", "{out}"],
                                     ["export", "{bridge}", "{out}"]])
def test_a_sampler_the_base_model_cannot_use_is_refused_before_any_weights_load(command, bridge_dir, tmp_path,
                                                                               capsys, monkeypatch):
    def never(*args, **kwargs):
        raise AssertionError("the bridge's models were loaded")

    monkeypatch.setattr(LaViBridge, "__init__", never)
    argv = [arg.format(bridge=bridge_dir, out=tmp_path / "out") for arg in command]
    assert main([*argv, "--scheduler", "flow_euler"]) == 2
    assert capsys.readouterr().err.strip() == ("diffengine: error: scheduler 'flow_euler' does not sample this "
                                               "model's ddpm schedule: choose unipc, ddim, dpm, ddpm")
    assert not list((tmp_path / "out").rglob("*"))  # infer made its (empty) --out folder, as it checks it is writable
