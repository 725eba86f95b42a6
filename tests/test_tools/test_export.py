"""``diffengine export``: a bridge as a diffusers pipeline folder that reproduces ``infer``."""
import argparse
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from diffengine.models import LaViBridge, LaViBridgePipeline
from diffengine.models.lora import lora_layers
from diffengine.tools.export import add_export_arguments, run_export
from tests.helpers import assert_same_images

PROMPT = "a red circle on a white background"
KWARGS = dict(num_inference_steps=2, height=32, width=32, output_type="np", seed=3)


def export(*argv: str) -> Path:
    parser = argparse.ArgumentParser()
    add_export_arguments(parser)
    return run_export(parser.parse_args(list(argv)))


def lora_folders(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.glob("*_lora"))


def test_unmerged_export_is_base_weights_plus_lora_and_bit_exact(tiny_bridge, bridge_dir, tiny_sd,
                                                                  tmp_path, capsys):
    out = export(str(bridge_dir), str(tmp_path / "pipe"))
    assert f"to {out}" in capsys.readouterr().out
    assert lora_folders(out) == ["text_encoder_lora", "unet_lora"]
    # the base UNet is saved untouched: its weights are the base checkpoint's
    base = load_file(Path(tiny_sd) / "unet" / "diffusion_pytorch_model.safetensors")
    saved = load_file(out / "unet" / "diffusion_pytorch_model.safetensors")
    assert saved.keys() == base.keys() and all(torch.equal(saved[k], base[k]) for k in base)
    pipeline = LaViBridgePipeline.from_pretrained(out)
    assert pipeline.config.max_length == 16
    assert_same_images(pipeline(PROMPT, **KWARGS).images, tiny_bridge.infer(PROMPT, **KWARGS))
    # saving keeps the format and leaves the LoRA on the pipeline's modules
    pipeline.save_pretrained(tmp_path / "again")
    assert lora_folders(tmp_path / "again") == ["text_encoder_lora", "unet_lora"]
    assert lora_layers(pipeline.text_encoder) and lora_layers(pipeline.unet)
    # merging and saving over it leaves no stale LoRA folder to be applied on top of merged weights
    pipeline.merge_lora()
    pipeline.save_pretrained(tmp_path / "again")
    assert lora_folders(tmp_path / "again") == []


def test_merged_export_is_plain_and_reproduces_infer(tiny_bridge, bridge_dir, tmp_path):
    work_dir = tmp_path / "work"
    (work_dir / "bridge").mkdir(parents=True)
    (work_dir / "bridge" / "last_bridge").write_text(str(bridge_dir))
    out = export(str(work_dir), str(tmp_path / "pipe"), "--merge-lora")
    assert lora_folders(out) == []
    for weights in (out / "text_encoder" / "model.safetensors",
                    out / "unet" / "diffusion_pytorch_model.safetensors"):
        assert not [k for k in load_file(weights) if "lora_" in k or "base_layer" in k]
    images = LaViBridgePipeline.from_pretrained(out)(PROMPT, **KWARGS).images
    assert np.abs(images - tiny_bridge.infer(PROMPT, **KWARGS)).max() <= 2 / 255


def test_an_export_on_the_hub_loads_with_its_lora_and_is_never_pushed_without_it(tiny_bridge, bridge_dir, tmp_path,
                                                                                monkeypatch):
    out = export(str(bridge_dir), str(tmp_path / "pipe"))
    downloads = []

    def snapshot_download(repo_id, **options):  # the hub's snapshot of what was uploaded: every file
        downloads.append((repo_id, options))
        return str(out)

    monkeypatch.setattr("huggingface_hub.snapshot_download", snapshot_download)
    pipeline = LaViBridgePipeline.from_pretrained("org/red-circles", revision="v1")
    assert downloads == [("org/red-circles", {"revision": "v1"})]
    assert lora_layers(pipeline.unet) and lora_layers(pipeline.text_encoder)
    assert_same_images(pipeline(PROMPT, **KWARGS).images, tiny_bridge.infer(PROMPT, **KWARGS))
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        LaViBridgePipeline.from_pretrained(str(tmp_path / "no_such_export"))
    with pytest.raises(ValueError, match="would upload it without its LoRA folders"):
        pipeline.save_pretrained(tmp_path / "again", push_to_hub=True, repo_id="org/red-circles")


def test_low_precision_export_reproduces_infer(bridge_dir, tmp_path):
    out = export(str(bridge_dir), str(tmp_path / "pipe"), "--dtype", "bfloat16")
    # as in training, the adapter (and the LoRA) stay float32
    pipeline = LaViBridgePipeline.from_pretrained(
        out, dtype={"default": torch.bfloat16, "adapter": torch.float32})
    expected = LaViBridge.from_bridge(bridge_dir, weight_dtype="bfloat16").infer(PROMPT, **KWARGS)
    assert_same_images(pipeline(PROMPT, **KWARGS).images, expected)
    # without a dtype it loads so too (left alone, the text encoder stays bfloat16, the rest float32)
    plain = LaViBridgePipeline.from_pretrained(out)
    assert [plain.text_encoder.dtype, plain.unet.dtype, plain.vae.dtype, plain.adapter.dtype] == [
        torch.bfloat16] * 3 + [torch.float32]
    assert_same_images(plain(PROMPT, **KWARGS).images, expected)


def test_export_rejects_bad_inputs_before_loading(bridge_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="neither a bridge folder"):
        export(str(tmp_path), str(tmp_path / "out"))
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "file").write_text("")
    with pytest.raises(ValueError, match="not an empty folder"):
        export(str(bridge_dir), str(tmp_path / "full"))
    with pytest.raises(FileNotFoundError, match="--text-encoder .* is not a folder"):
        export(str(bridge_dir), str(tmp_path / "out"), "--text-encoder", str(tmp_path / "missing"))
    assert not (tmp_path / "out").exists()
