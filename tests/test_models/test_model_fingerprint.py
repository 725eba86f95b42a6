"""Base-model fingerprints: the weights files a bridge's base models load from, told apart cheaply."""
import shutil

from diffengine.models.model_fingerprint import SAMPLE_BYTES, differing_weights, file_fingerprint, weights_fingerprints


def test_a_vision_models_fingerprint_covers_its_denoiser_and_vae_only(tiny_sd, tmp_path):
    prints = weights_fingerprints(tiny_sd, "vision_model")
    assert sorted(prints) == ["unet/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.safetensors"]
    copy = shutil.copytree(tiny_sd, tmp_path / "sd")
    (copy / "text_encoder").mkdir(exist_ok=True)  # what the bridge never loads does not count
    (copy / "text_encoder" / "model.safetensors").write_bytes(b"other")
    (copy / "unet" / "diffusion_pytorch_model.fp16.safetensors").write_bytes(b"a variant")
    copied = weights_fingerprints(str(copy), "vision_model")
    assert differing_weights(prints, copied) == []  # the variant only one folder has is not compared
    assert weights_fingerprints("org/model-on-the-hub", "vision_model") is None
    assert differing_weights(prints, {"model.safetensors": "0"}) is None  # nothing shared: nothing said


def test_a_change_anywhere_in_the_sampled_parts_changes_the_fingerprint(tmp_path):
    path = tmp_path / "model.safetensors"
    data = bytearray(range(256)) * (SAMPLE_BYTES // 64)  # four samples long
    path.write_bytes(data)
    original = file_fingerprint(path)
    for offset in (0, len(data) // 2, len(data) - 1):  # start, middle, end
        changed = bytearray(data)
        changed[offset] ^= 1
        path.write_bytes(changed)
        assert file_fingerprint(path) != original
    path.write_bytes(data + b"x")
    assert file_fingerprint(path) != original
    path.write_bytes(data)
    assert file_fingerprint(path) == original
