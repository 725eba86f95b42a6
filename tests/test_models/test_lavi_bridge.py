import copy
import json
import shutil

import numpy as np
import pytest
import torch
from mmengine.optim import OptimWrapper
from safetensors.torch import load_file, save_file
from torch.optim import AdamW

from diffengine.engine import ParamGroupsOptimWrapperConstructor
from diffengine.models import LaViBridge, LaViBridgeTextAdapter
from diffengine.models.language import drop_captions
from tests.helpers import TWO_CAPTIONS, fixed_batch, seeded_loss


def build_optimizer(model, group_lr) -> OptimWrapper:
    return ParamGroupsOptimWrapperConstructor(
        dict(type=OptimWrapper, optimizer=dict(type=AdamW, lr=1e-3, weight_decay=1e-2),
             clip_grad=dict(max_norm=1.0)),
        dict(group_lr=group_lr))(model)


def test_loads_t5_encoder_only_and_llama_base_model(tiny_bridge, tiny_llama, tiny_sd):
    assert type(tiny_bridge.language.model).__name__ == "T5EncoderModel"
    llama = LaViBridge(tiny_llama, tiny_sd, max_length=16)
    assert type(llama.language.model).__name__ == "LlamaModel"  # no LM head, no logits
    assert llama.language.tokenizer.pad_token is not None
    ids, mask = llama.language.tokenize(list(TWO_CAPTIONS), torch.device("cpu"))
    assert ids.shape == (2, 16) and mask[:, -1].sum() == 0  # right padding to max_length
    hidden = llama.language(ids, mask)
    # the final normed hidden state: it equals the causal LM's last hidden_states entry
    from transformers import LlamaForCausalLM
    reference = LlamaForCausalLM.from_pretrained(tiny_llama)
    expected = reference(input_ids=ids, output_hidden_states=True).hidden_states[-1]
    torch.testing.assert_close(hidden, expected)


def test_adapter_dims_default_to_the_models_and_mismatch_fails(tiny_t5, tiny_sd):
    model = LaViBridge(tiny_t5, tiny_sd, max_length=16)
    assert dict(model.adapter.config)["in_dim"] == 32
    assert dict(model.adapter.config)["out_dim"] == 32
    with pytest.raises(ValueError, match="out_dim=768 does not match"):
        LaViBridge(tiny_t5, tiny_sd, adapter=dict(out_dim=768))
    with pytest.raises(ValueError, match="in_dim=1024 does not match"):
        LaViBridge(tiny_t5, tiny_sd, adapter=dict(in_dim=1024))


def test_adapter_matches_paper_architecture_and_round_trips(tmp_path):
    adapter = LaViBridgeTextAdapter(1024, 896, 768)
    names = set(adapter.state_dict())
    assert {"norm1.weight", "ff1.net.0.proj.weight", "ff1.net.2.weight", "norm2.weight",
            "ff2.net.0.proj.weight", "ff2.net.2.weight"} <= names
    assert adapter.ff1.net[0].proj.weight.shape == (2 * 4 * 1024, 1024)  # GEGLU, mult 4
    assert adapter.ff1.net[2].weight.shape == (896, 4 * 1024)
    assert adapter.ff2.net[2].weight.shape == (768, 4 * 896)
    adapter.save_pretrained(tmp_path)
    assert (tmp_path / "diffusion_pytorch_model.safetensors").is_file()
    loaded = LaViBridgeTextAdapter.from_pretrained(tmp_path).eval()
    x = torch.randn(1, 3, 1024)
    torch.testing.assert_close(loaded(x), adapter.eval()(x))


def test_training_lowers_loss_changes_only_bridge_weights(tiny_bridge):
    batch = fixed_batch()
    frozen = {n: p.detach().clone() for n, p in tiny_bridge.named_parameters() if not p.requires_grad}
    trainable = {n: p.detach().clone() for n, p in tiny_bridge.named_parameters() if p.requires_grad}
    assert all("lora_" in n or n.startswith("adapter.") for n in trainable)
    optim = build_optimizer(tiny_bridge, dict(vision_lora=1e-3, text_lora=1e-3, adapter=1e-3))
    before = seeded_loss(tiny_bridge, batch)
    torch.manual_seed(0)
    for _ in range(30):
        optim.update_params(tiny_bridge(batch)["loss"])
    after = seeded_loss(tiny_bridge, batch)
    assert after < 0.9 * before, (before, after)
    for name, value in tiny_bridge.named_parameters():
        if name in frozen:
            assert torch.equal(value, frozen[name]), f"frozen {name} changed"
    changed = [n for n, p in tiny_bridge.named_parameters() if n in trainable
               and not torch.equal(p, trainable[n])]
    assert any(".lora_B." in n and n.startswith("unet.") for n in changed)
    assert any(".lora_B." in n and n.startswith("language.") for n in changed)
    assert any(n.startswith("adapter.") for n in changed)


def test_three_parameter_groups_get_their_learning_rates(tiny_bridge):
    optim = build_optimizer(tiny_bridge, dict(vision_lora=1e-4, text_lora=5e-6, adapter=2e-4))
    groups = {g["name"]: g for g in optim.optimizer.param_groups}
    assert {n: g["lr"] for n, g in groups.items()} == {
        "vision_lora": 1e-4, "text_lora": 5e-6, "adapter": 2e-4}
    in_groups = {id(p) for g in groups.values() for p in g["params"]}
    assert in_groups == {id(p) for p in tiny_bridge.parameters() if p.requires_grad}
    with pytest.raises(ValueError, match="unknown parameter groups"):
        build_optimizer(tiny_bridge, dict(vison_lora=1e-4))


def test_checkpoint_state_dict_is_lean_and_loads_back(tiny_bridge, tiny_t5, tiny_sd):
    state = tiny_bridge.state_dict()
    trainable = {n for n, p in tiny_bridge.named_parameters() if p.requires_grad}
    assert set(state) == trainable
    with torch.no_grad():
        for p in tiny_bridge.adapter.parameters():
            p.add_(0.5)
    other = LaViBridge(tiny_t5, tiny_sd, max_length=16, text_lora=dict(rank=4, dropout=0.0),
                       vision_lora=dict(rank=4, dropout=0.0))
    result = other.load_state_dict(tiny_bridge.state_dict(), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    batch = fixed_batch()
    assert seeded_loss(other, batch) == seeded_loss(tiny_bridge, batch)


def test_bridge_folder_round_trip(tiny_bridge, tiny_t5, tiny_sd, tmp_path, monkeypatch):
    with torch.no_grad():
        for p in tiny_bridge.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.05)
    tiny_bridge.save_bridge(tmp_path / "bridge", iteration=7)
    for part in ("text_lora", "vision_lora"):
        assert (tmp_path / "bridge" / part / "adapter_config.json").is_file()
        assert (tmp_path / "bridge" / part / "adapter_model.safetensors").is_file()
    assert (tmp_path / "bridge" / "adapter" / "diffusion_pytorch_model.safetensors").is_file()
    fresh = LaViBridge(tiny_t5, tiny_sd, max_length=16, text_lora=dict(rank=4, dropout=0.0),
                       vision_lora=dict(rank=4, dropout=0.0), bridge_path=str(tmp_path / "bridge"))
    batch = fixed_batch()
    assert seeded_loss(fresh, batch) == seeded_loss(tiny_bridge, batch)
    wrong_rank = LaViBridge(tiny_t5, tiny_sd, max_length=16, text_lora=dict(rank=8))
    with pytest.raises(ValueError, match="rank 4 alpha 4, this model rank 8 alpha 8"):
        wrong_rank.load_bridge(tmp_path / "bridge")
    wrong_alpha = LaViBridge(tiny_t5, tiny_sd, max_length=16, text_lora=dict(rank=4, alpha=8))
    with pytest.raises(ValueError, match="alpha 4, this model rank 4 alpha 8"):
        wrong_alpha.load_bridge(tmp_path / "bridge")
    with pytest.raises(FileNotFoundError, match="not a bridge folder"):
        wrong_rank.load_bridge(tmp_path)
    # a base model at another path is told apart by its weights: a copy is the same model, a model
    # of the same shape with other weights is not (a warning naming both and the files)
    warnings = []
    monkeypatch.setattr("diffengine.models.editors.lavi_bridge.lavi_bridge.print_log",
                        lambda message, **kwargs: warnings.append(message))
    t5_copy = shutil.copytree(tiny_t5, tmp_path / "t5_copy")
    continue_with = dict(max_length=16, text_lora=dict(rank=4, dropout=0.0), vision_lora=dict(rank=4, dropout=0.0),
                         bridge_path=str(tmp_path / "bridge"))
    LaViBridge(str(t5_copy), tiny_sd, **continue_with)
    assert warnings == []
    weights = load_file(t5_copy / "model.safetensors")
    save_file({name: tensor + 0.01 for name, tensor in weights.items()}, t5_copy / "model.safetensors",
              metadata={"format": "pt"})
    LaViBridge(str(t5_copy), tiny_sd, **continue_with)
    assert len(warnings) == 1 and (f"trained with text_encoder {tiny_t5}, whose weights differ from those of "
                                   f"{t5_copy} loaded here (model.safetensors)") in warnings[0]
    # a bridge written before it recorded fingerprints: by path
    manifest = json.loads((tmp_path / "bridge" / "bridge.json").read_text())
    del manifest["base_fingerprints"]
    (tmp_path / "bridge" / "bridge.json").write_text(json.dumps(manifest))
    LaViBridge(str(t5_copy), tiny_sd, **continue_with)
    assert len(warnings) == 2 and f"trained with text_encoder {tiny_t5}, loaded here with {t5_copy}" in warnings[1]
    warnings.clear()
    # so is a caption length other than the bridge learned
    LaViBridge(tiny_t5, tiny_sd, max_length=24, text_lora=dict(rank=4, dropout=0.0),
               vision_lora=dict(rank=4, dropout=0.0), bridge_path=str(tmp_path / "bridge"))
    assert len(warnings) == 1 and "was trained with max_length=16, continued here with max_length=24: " in warnings[0]
    # what the weights mean is checked before any weights load
    with pytest.raises(ValueError, match=r"trained with text_lora=\{'rank': 4, 'alpha': 4\}, this model has "
                                         r"text_lora=\{'rank': 8, 'alpha': 8\}"):
        LaViBridge(tiny_t5, tiny_sd, text_lora=dict(rank=8), vision_lora=dict(rank=4),
                   bridge_path=str(tmp_path / "bridge"))
    with pytest.raises(ValueError, match="trained with prediction_type='epsilon', this model has "
                                         "prediction_type='v_prediction'"):
        LaViBridge(tiny_t5, tiny_sd, prediction_type="v_prediction", bridge_path=str(tmp_path / "bridge"))


def test_infer_is_seeded_and_uses_cfg(tiny_bridge):
    kwargs = dict(num_inference_steps=3, height=32, width=32, output_type="np")
    first = tiny_bridge.infer(list(TWO_CAPTIONS), seed=1, **kwargs)
    again = tiny_bridge.infer(list(TWO_CAPTIONS), seed=1, **kwargs)
    other_seed = tiny_bridge.infer(list(TWO_CAPTIONS), seed=2, **kwargs)
    no_guidance = tiny_bridge.infer(list(TWO_CAPTIONS), seed=1, guidance_scale=1.0, **kwargs)
    assert first.shape == (2, 32, 32, 3)
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first, other_seed)
    assert not np.allclose(first, no_guidance)
    images = tiny_bridge.infer("a red circle", num_inference_steps=2, height=32, width=32,
                               scheduler="ddim")
    assert images[0].size == (32, 32)
    assert tiny_bridge.training  # infer restores the mode
    with pytest.raises(ValueError, match="'euler' does not sample this model's ddpm schedule: choose unipc, ddim"):
        tiny_bridge.infer("x", scheduler="euler")


def test_reduced_precision_frozen_weights_train_in_float32(tiny_t5, tiny_sd):
    model = LaViBridge(tiny_t5, tiny_sd, max_length=16, weight_dtype="bfloat16")
    dtypes = {p.dtype for p in model.parameters() if not p.requires_grad}
    assert dtypes == {torch.bfloat16}
    assert {p.dtype for p in model.parameters() if p.requires_grad} == {torch.float32}
    loss = model(fixed_batch())["loss"]
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None for p in model.adapter.parameters())


def test_loss_options_and_caption_dropout(tiny_t5, tiny_sd):
    model = LaViBridge(tiny_t5, tiny_sd, max_length=16, prediction_type="v_prediction",
                       snr_gamma=5.0, caption_dropout=0.5, gradient_checkpointing=True)
    assert model.noise_scheduler.config.prediction_type == "v_prediction"
    torch.manual_seed(0)
    dropped = [drop_captions(list(TWO_CAPTIONS), model.caption_dropout) for _ in range(20)]
    assert ["", ""] in dropped and list(TWO_CAPTIONS) in dropped  # each caption dropped half the time
    assert drop_captions(list(TWO_CAPTIONS), 0.0) == list(TWO_CAPTIONS)
    loss = model(fixed_batch())["loss"]
    loss.backward()
    assert torch.isfinite(loss)
    for probability in (1.0, 1.5):  # at 1 every caption would be dropped: a bridge deaf to the text
        with pytest.raises(ValueError, match=r"caption_dropout must be in \[0, 1\)"):
            LaViBridge(tiny_t5, tiny_sd, caption_dropout=probability)
    with pytest.raises(ValueError, match="weight_dtype"):
        LaViBridge(tiny_t5, tiny_sd, weight_dtype="fp8")
    with pytest.raises(NotImplementedError, match="mode='loss'"):
        model(fixed_batch(), mode="predict")


def test_min_snr_weighting_changes_the_loss(tiny_t5, tiny_sd):
    plain = LaViBridge(tiny_t5, tiny_sd, max_length=16, text_lora=dict(dropout=0.0),
                       vision_lora=dict(dropout=0.0))
    weighted = copy.deepcopy(plain)
    weighted.objective.snr_gamma = 1.0
    batch = fixed_batch()
    assert seeded_loss(plain, batch) != pytest.approx(seeded_loss(weighted, batch))


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_min_snr_weights_stay_finite_on_a_zero_terminal_snr_schedule(prediction_type):
    from diffusers import DDPMScheduler
    from diffusers.training_utils import compute_snr

    from diffengine.models.losses import DDPMObjective

    scheduler = DDPMScheduler(rescale_betas_zero_snr=True, prediction_type=prediction_type)
    torch.manual_seed(0)
    noised = DDPMObjective(scheduler, snr_gamma=5.0).noised(torch.zeros(5000, 1, 1, 1))
    snr = compute_snr(scheduler, noised.timesteps)
    assert (snr == 0).any()  # some draws hit the last step, which is pure noise
    expected = torch.clamp(snr, max=5.0) / (snr + 1 if prediction_type == "v_prediction" else snr)
    if prediction_type == "epsilon":
        expected[snr == 0] = 1.0  # min(SNR, gamma) / SNR tends to 1 as SNR tends to 0
    assert torch.isfinite(noised.weights).all()
    torch.testing.assert_close(noised.weights, expected)


def test_rank_0_trains_the_adapter_alone_and_round_trips(tiny_t5, tiny_sd, tmp_path):
    from peft.tuners.tuners_utils import BaseTunerLayer

    model = LaViBridge(tiny_t5, tiny_sd, max_length=16, text_lora=dict(rank=0),
                       vision_lora=dict(rank=0))
    assert not any(isinstance(m, BaseTunerLayer) for m in model.modules())
    groups = model.parameter_groups()
    assert groups["vision_lora"] == [] and groups["text_lora"] == []
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {
        f"adapter.{n}" for n, _ in model.adapter.named_parameters()}
    with torch.no_grad():
        for p in model.adapter.parameters():
            p.add_(0.05)
    bridge = model.save_bridge(tmp_path / "bridge")
    assert not (bridge / "text_lora").exists() and not (bridge / "vision_lora").exists()
    loaded = LaViBridge.from_bridge(bridge)
    assert loaded.text_lora_config is None and loaded.vision_lora_config is None
    assert seeded_loss(loaded, fixed_batch()) == pytest.approx(seeded_loss(model, fixed_batch()))
    with_lora = LaViBridge(tiny_t5, tiny_sd, max_length=16, text_lora=dict(rank=0))
    with pytest.raises(ValueError, match="vision_lora has LoRA rank 0 alpha None, this model rank 32"):
        with_lora.load_bridge(bridge)


@pytest.mark.parametrize(("adapter", "message"), [
    (dict(in_dim=4096), r"adapter in_dim=4096 does not match the language model's hidden size 32 "),
    (dict(out_dim=768), r"adapter out_dim=768 does not match the vision model's cross_attention_dim=32 "),
    (dict(pooled_dim=16), r"adapter pooled_dim=16 does not match the pooled text width None "),
], ids=["in_dim", "out_dim", "pooled_dim"])
def test_an_adapter_that_does_not_fit_either_model_is_refused_before_any_weights_load(
        tiny_t5, tiny_sd, monkeypatch, adapter, message):
    import diffengine.models.editors.lavi_bridge.lavi_bridge as lavi_bridge
    from diffengine.models.vision import VisionFamily

    def never(*args, **kwargs):
        raise AssertionError("a model's weights were loaded")

    monkeypatch.setattr(lavi_bridge, "LanguageModel", never)
    monkeypatch.setattr(VisionFamily, "load", never)
    with pytest.raises(ValueError, match=message):
        LaViBridge(tiny_t5, tiny_sd, adapter=adapter)


def test_a_lora_rank_above_what_its_layers_can_use_is_named(tiny_t5, tiny_sd, monkeypatch):
    warnings = []
    monkeypatch.setattr("diffengine.models.editors.lavi_bridge.lavi_bridge.print_log",
                        lambda message, **kwargs: warnings.append(message))
    # the tiny T5's 8 LoRA layers are 32 wide; 41 of the tiny UNet's 65 are 32 wide, 24 are 64
    LaViBridge(tiny_t5, tiny_sd, max_length=16, text_lora=dict(rank=32), vision_lora=dict(rank=40))
    assert warnings == ["vision_lora.rank=40 is above what 41 of its 65 LoRA layers can use (an update's "
                        "rank is at most min(inputs, outputs), 32 for the narrowest): the extra ranks add "
                        "cost, not capacity"]
