import json

import numpy as np
import pytest
import torch
from PIL import Image

from diffengine.entry_point import main
from diffengine.evaluation.clip_score import ClipScorer

PROMPTS = ["a red circle on a white background", "a blue backdrop with a yellow square"]


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    """A CLIP built from a config, saved with its tokenizer and image processor config."""
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel

    from diffengine.datasets.shapes import caption_corpus
    from diffengine.tools.demo_assets import word_level_tokenizer

    out = tmp_path_factory.mktemp("clip")
    tokenizer = word_level_tokenizer(caption_corpus(), unk_token="[UNK]", pad_token="[PAD]")
    tokenizer.save_pretrained(out)
    torch.manual_seed(0)
    CLIPModel(CLIPConfig(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2,
                         num_attention_heads=4, intermediate_size=64, max_position_embeddings=32),
        vision_config=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                           intermediate_size=64, image_size=32, patch_size=8),
        projection_dim=16)).save_pretrained(out)
    CLIPImageProcessorPil(size={"shortest_edge": 32},
                          crop_size={"height": 32, "width": 32}).save_pretrained(out)
    return out


def test_score_is_100_times_the_clipped_cosine(tiny_clip):
    from transformers import AutoTokenizer, CLIPModel

    images = [Image.fromarray(np.full((40, 48, 3), v, np.uint8)) for v in (30, 200)]
    scores = ClipScorer(tiny_clip)(images, PROMPTS)
    model = CLIPModel.from_pretrained(tiny_clip).eval()
    tokens = AutoTokenizer.from_pretrained(tiny_clip)(PROMPTS, padding=True, return_tensors="pt")
    pixels = ClipScorer(tiny_clip).image_processor(images=images, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        logits = model(**tokens, pixel_values=pixels).logits_per_image
        expected = (logits.diagonal() / model.logit_scale.exp() * 100).clamp(min=0).numpy()
    np.testing.assert_allclose(scores, expected, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="2 images for 1 texts"):
        ClipScorer(tiny_clip)(images, PROMPTS[:1])


def test_eval_clip_score_of_a_bridge(bridge_dir, tiny_clip, tmp_path, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join([*PROMPTS, PROMPTS[0]]) + "\n\n")  # a repeated prompt keeps every score
    out = tmp_path / "scores.json"
    assert main(["eval", str(bridge_dir), "--metric", "clip_score", "--clip-model", str(tiny_clip),
                 "--prompts", str(prompts), "--images-per-prompt", "2", "--steps", "2",
                 "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert list(result["per_prompt"]) == PROMPTS
    assert [len(v) for v in result["per_prompt"].values()] == [4] + [2] * (len(PROMPTS) - 1)
    assert all(0 <= s <= 100 for v in result["per_prompt"].values() for s in v)
    mean = np.mean([s for v in result["per_prompt"].values() for s in v])
    assert result["clip_score"]["mean"] == pytest.approx(mean, abs=1e-4)
    low, high = result["clip_score"]["ci95"]
    assert low <= result["clip_score"]["mean"] <= high
    assert "CLIP score" in capsys.readouterr().out
    # what was scored, and how its images were made
    assert {key: result[key] for key in ("model", "model_folder", "iteration", "steps", "guidance", "seed",
                                         "images_per_prompt", "batch_size", "device", "dtype")} == {
        "model": str(bridge_dir), "model_folder": str(bridge_dir.resolve()), "iteration": 1, "steps": 2,
        "guidance": 5.0, "seed": 0, "images_per_prompt": 2, "batch_size": 16, "device": "cpu", "dtype": "float32"}


def test_eval_clip_score_generates_and_scores_in_batches(bridge_dir, tiny_clip, tmp_path, capsys, monkeypatch):
    from diffengine.models import LaViBridge

    prompts = [*PROMPTS, "a green triangle over black"]
    (tmp_path / "prompts.txt").write_text("\n".join(prompts))
    batches = []
    infer = LaViBridge.infer

    def recorded_infer(model, batch, **kwargs):
        batches.append((list(batch), kwargs["seed"]))
        return infer(model, batch, **kwargs)

    monkeypatch.setattr(LaViBridge, "infer", recorded_infer)
    assert main(["eval", str(bridge_dir), "--metric", "clip_score", "--clip-model", str(tiny_clip), "--prompts",
                 str(tmp_path / "prompts.txt"), "--images-per-prompt", "2", "--steps", "2", "--batch-size", "2",
                 "--seed", "5", "--out", str(tmp_path / "scores.json")]) == 0
    assert batches == [(prompts[:2], 5), (prompts[2:], 5), (prompts[:2], 6), (prompts[2:], 6)]
    scores = json.loads((tmp_path / "scores.json").read_text())["per_prompt"]
    assert list(scores) == prompts and all(len(v) == 2 for v in scores.values())
    assert "clip_score: 6/6 images scored" in capsys.readouterr().err


def test_eval_says_how_to_provide_a_clip_model(bridge_dir, tmp_path, capsys):
    assert main(["eval", str(bridge_dir), "--metric", "clip_score", "--clip-model",
                 str(tmp_path / "missing"), "--prompts", "p.txt"]) == 2
    error = capsys.readouterr().err
    assert "--clip-model" in error and "no CLIP model there" in error and "save_pretrained" in error
    assert len(error.strip().splitlines()) == 1


def test_a_clip_folder_saved_with_clip_processor_scores_the_same(tiny_clip, tmp_path):
    import shutil

    from transformers import AutoTokenizer, CLIPImageProcessorPil, CLIPProcessor

    # as CLIP_MODEL_HELP says to save one: the image processor inside processor_config.json
    folder = tmp_path / "clip"
    shutil.copytree(tiny_clip, folder, ignore=shutil.ignore_patterns("preprocessor_config.json", "tokenizer*"))
    CLIPProcessor(image_processor=CLIPImageProcessorPil.from_pretrained(tiny_clip),
                  tokenizer=AutoTokenizer.from_pretrained(tiny_clip)).save_pretrained(folder)
    assert not (folder / "preprocessor_config.json").exists()
    images = [Image.new("RGB", (32, 32), color) for color in ("red", "blue")]
    np.testing.assert_array_equal(ClipScorer(folder)(images, PROMPTS[:2]), ClipScorer(tiny_clip)(images, PROMPTS[:2]))


@pytest.mark.parametrize("case, expected", [
    ("another model", "holds a 't5' model, not a CLIP model (model_type 'clip')"),
    ("no image processor", "has no image processor (preprocessor_config.json, or processor_config.json as "
                           "CLIPProcessor writes it): save CLIPProcessor beside the model"),
    ("prompts not UTF-8", "prompts.txt is not UTF-8 text (invalid continuation byte at byte 3): save the prompt "
                          "file as UTF-8"),
    ("a folder for --out", "is a folder: name the file to write"),
])
def test_eval_refuses_bad_clip_inputs_before_the_bridge_loads(case, expected, bridge_dir, tiny_clip, tmp_path,
                                                              capsys, monkeypatch):
    import shutil

    from diffengine.tools import eval as eval_tool

    def never(args):
        raise AssertionError("the bridge was loaded")

    monkeypatch.setattr(eval_tool, "load_text_to_image_model", never)
    clip = tmp_path / "clip"
    shutil.copytree(tiny_clip, clip)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS))
    out = tmp_path / "scores.json"
    if case == "another model":
        config = json.loads((clip / "config.json").read_text())
        (clip / "config.json").write_text(json.dumps({**config, "model_type": "t5"}))
    elif case == "no image processor":
        (clip / "preprocessor_config.json").unlink()
    elif case == "prompts not UTF-8":
        prompts.write_bytes("caf\u00e9 au lait".encode("latin-1") + b"\nx")
    else:
        out.mkdir()
    assert main(["eval", str(bridge_dir), "--metric", "clip_score", "--clip-model", str(clip),
                 "--prompts", str(prompts), "--out", str(out), "--overwrite"]) == 2
    error = capsys.readouterr().err
    assert len(error.strip().splitlines()) == 1 and expected in error
