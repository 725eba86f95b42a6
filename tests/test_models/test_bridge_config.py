"""Bridges remember how they were trained, and where their base models are."""
import inspect
import json

import pytest

from diffengine.models import LaViBridge


def test_a_bridge_records_every_argument_and_reloads_with_it(tiny_t5, tiny_sd, tmp_path):
    model = LaViBridge(tiny_t5, tiny_sd, max_length=16, prediction_type="v_prediction", snr_gamma=5.0,
                       caption_dropout=0.2, text_lora=dict(rank=0), vision_lora=dict(rank=2, alpha=4))
    manifest = json.loads((model.save_bridge(tmp_path / "bridge") / "bridge.json").read_text())
    # speed options (memory layout, compilation) change no result and are not part of a bridge
    speed_only = {"channels_last", "torch_compile"}
    arguments = set(inspect.signature(LaViBridge).parameters) - {"bridge_path", "data_preprocessor"}
    assert arguments - speed_only <= set(manifest) and not speed_only & set(manifest)
    assert manifest["vision_lora"] == {"rank": 2, "alpha": 4, "dropout": 0.1}
    reloaded = LaViBridge.from_bridge(tmp_path / "bridge")
    # a v-prediction bridge on an epsilon base samples as v-prediction
    assert reloaded.noise_scheduler.config.prediction_type == "v_prediction"
    assert reloaded.bridge_config == model.bridge_config


def test_bridges_of_the_earlier_format_still_load(tiny_t5, tiny_sd, tmp_path):
    model = LaViBridge(tiny_t5, tiny_sd, max_length=16, vision_lora=dict(rank=2, alpha=4))
    bridge = model.save_bridge(tmp_path / "bridge")
    earlier_keys = ("text_encoder", "vision_model", "max_length", "hidden_layer", "text_attention_mask",
                    "weight_dtype", "diffengine_version")
    manifest = json.loads((bridge / "bridge.json").read_text())
    (bridge / "bridge.json").write_text(json.dumps({k: manifest[k] for k in earlier_keys}))
    reloaded = LaViBridge.from_bridge(bridge)
    assert reloaded.bridge_config["vision_lora"] == {"rank": 2, "alpha": 4, "dropout": 0.1}
    assert reloaded.bridge_config["adapter"] == model.bridge_config["adapter"]


def test_local_model_paths_are_recorded_absolute(tiny_t5, tiny_sd, tmp_path, monkeypatch):
    from pathlib import Path

    monkeypatch.chdir(Path(tiny_t5).parent)
    model = LaViBridge(Path(tiny_t5).name, tiny_sd, max_length=16)
    assert model.bridge_config["text_encoder"] == str(Path(tiny_t5).resolve())
    bridge = model.save_bridge(tmp_path / "bridge")
    monkeypatch.chdir(tmp_path)  # infer/export from another folder
    assert LaViBridge.from_bridge(bridge).text_encoder_path == str(Path(tiny_t5).resolve())


def test_a_missing_base_model_names_the_option_to_pass(bridge_dir, tiny_t5):
    manifest = json.loads((bridge_dir / "bridge.json").read_text())
    manifest["text_encoder"] = "/models/that/moved/t5"
    (bridge_dir / "bridge.json").write_text(json.dumps(manifest))
    with pytest.raises(FileNotFoundError, match=r"records text_encoder '/models/that/moved/t5', which "
                       r"does not exist here: pass text_encoder= \(--text-encoder PATH"):
        LaViBridge.from_bridge(bridge_dir)
    assert LaViBridge.from_bridge(bridge_dir, text_encoder=tiny_t5).text_encoder_path == tiny_t5


def test_a_truncated_bridge_file_is_named(bridge_dir):
    path = bridge_dir / "vision_lora" / "adapter_model.safetensors"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ValueError, match=r"vision_lora/adapter_model.safetensors is not a readable safetensors file"):
        LaViBridge.from_bridge(bridge_dir)


def test_a_bad_prediction_type_fails_before_any_weights_load(tiny_t5, tiny_sd, monkeypatch):
    from diffengine.models.editors.lavi_bridge import lavi_bridge

    def no_loading(*args, **kwargs):
        raise AssertionError("the language model was loaded before the options were checked")

    monkeypatch.setattr(lavi_bridge, "LanguageModel", no_loading)
    with pytest.raises(ValueError, match="prediction_type must be one of epsilon, v_prediction"):
        LaViBridge(tiny_t5, tiny_sd, prediction_type="v-prediction")


def test_a_bridge_to_continue_is_checked_against_the_model_before_any_weights_load(bridge_dir, tiny_t5, tiny_sd,
                                                                                   monkeypatch):
    import transformers

    # what tiny_bridge was built with: its bridge may be continued under these arguments
    arguments = dict(text_encoder=tiny_t5, vision_model=tiny_sd, max_length=16, bridge_path=str(bridge_dir),
                     text_lora=dict(rank=4), vision_lora=dict(rank=4))
    monkeypatch.setattr(transformers.T5EncoderModel, "from_pretrained", lambda *a, **k: pytest.fail("loaded"))
    LaViBridge.check_arguments(**arguments)
    saved_int_dim = json.loads((bridge_dir / "adapter" / "config.json").read_text())["int_dim"]
    with pytest.raises(ValueError, match=f"has an adapter of int_dim={saved_int_dim}, this model's has int_dim=7: "
                                         f"set model.adapter.int_dim={saved_int_dim} to continue that bridge"):
        LaViBridge.check_arguments(**arguments, adapter=dict(int_dim=7))
    (bridge_dir / "vision_lora" / "adapter_model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="lacks vision_lora/adapter_model.safetensors"):
        LaViBridge.check_arguments(**arguments)
