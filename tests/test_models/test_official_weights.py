import json
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from diffusers import PixArtTransformer2DModel, UNet2DConditionModel
from safetensors.torch import load_file
from torch import nn
from transformers import LlamaForCausalLM, T5EncoderModel

from diffengine.models import LaViBridge, LaViBridgeTextAdapter
from diffengine.models.editors.lavi_bridge.official_weights import convert_official_checkpoint, official_lora_layers
from diffengine.models.lora import inject_lora, lora_target_names

RANK = 4
UNET_TARGETS = {"ResnetBlock2D", "CrossAttention", "Attention", "GEGLU"}
TRANSFORMER_TARGETS = {"Attention", "GEGLU"}  # the authors' set for PixArt
CAPTIONS = ["a red circle on a white background", "a blue square on a black background"]
# differs from the default (in + out) // 2, so the converted adapter must take the folder's dims
ADAPTER_DIMS = dict(in_dim=32, int_dim=24, out_dim=32)


def inject_paper_lora(model: nn.Module, target_classes: set[str], seed: int) -> list[torch.Tensor]:
    """The paper's injection, written independently: returns the fp16 [up, down, ...] list to save.

    Every Linear/Conv2d inside a target-class module (``model.modules()`` order, then the module's
    ``named_modules()``) gets random non-zero up/down tensors, applied by a forward hook adding
    ``up(down(x))`` computed from the fp16-rounded values, as the authors' released files hold them.
    """
    generator = torch.Generator().manual_seed(seed)
    tensors = []
    for module in model.modules():
        if type(module).__name__ not in target_classes:
            continue
        for _, layer in module.named_modules():
            if isinstance(layer, nn.Linear):
                up_shape, down_shape = (layer.out_features, RANK), (RANK, layer.in_features)
            elif isinstance(layer, nn.Conv2d):
                up_shape = (layer.out_channels, RANK, 1, 1)
                down_shape = (RANK, layer.in_channels, *layer.kernel_size)
            else:
                continue
            up = (0.1 * torch.randn(up_shape, generator=generator)).half()
            down = (0.1 * torch.randn(down_shape, generator=generator)).half()
            tensors += [up, down]
            layer.register_forward_hook(lora_delta_hook(up.float(), down.float()))
    return tensors


def lora_delta_hook(up: torch.Tensor, down: torch.Tensor):
    def hook(layer, args, output):
        x = args[0]
        if isinstance(layer, nn.Conv2d):
            # the paper's conv LoRA: down has the conv's kernel/stride/padding, up is 1x1
            return output + F.conv2d(F.conv2d(x, down, stride=layer.stride, padding=layer.padding), up)
        return output + F.linear(F.linear(x, down), up)
    return hook


def write_official_adapter(directory: Path, **dims) -> LaViBridgeTextAdapter:
    """An adapter folder as the authors' TextAdapter writes it: their class name, three dims only."""
    torch.manual_seed(0)
    adapter = LaViBridgeTextAdapter(**{**ADAPTER_DIMS, **dims}).eval()
    adapter.save_pretrained(directory, safe_serialization=True)
    config = {"_class_name": "TextAdapter", "_diffusers_version": "0.24.0",
              **{k: adapter.config[k] for k in ("in_dim", "int_dim", "out_dim")}}
    (directory / "config.json").write_text(json.dumps(config))
    return adapter


def write_official_checkpoint(directory: Path, text_model: nn.Module, text_targets: set[str],
                              vision_model: nn.Module, vision_targets: set[str] = UNET_TARGETS) -> Path:
    """``lora_text.pt``, ``lora_vis.pt`` and ``adapter/``; LoRA hooks stay on the given models."""
    directory.mkdir(parents=True)
    torch.save(inject_paper_lora(text_model, text_targets, seed=1), directory / "lora_text.pt")
    torch.save(inject_paper_lora(vision_model, vision_targets, seed=2), directory / "lora_vis.pt")
    return directory


@pytest.fixture(scope="module")
def official_t5_unet(tiny_t5, tiny_sd, tmp_path_factory):
    """An official-format t5_unet checkpoint and the reference models it was injected into."""
    text = T5EncoderModel.from_pretrained(tiny_t5).eval()
    unet = UNet2DConditionModel.from_pretrained(tiny_sd, subfolder="unet").eval()
    ckpt = write_official_checkpoint(tmp_path_factory.mktemp("official") / "t5_unet", text,
                                     {"T5Attention"}, unet)
    adapter = write_official_adapter(ckpt / "adapter")
    return SimpleNamespace(ckpt=ckpt, text=text, unet=unet, adapter=adapter)


@pytest.fixture(scope="module")
def official_llama_unet(tiny_llama, tiny_sd, tmp_path_factory):
    """As above for llama2_unet; like the authors, the LoRA walk runs on the causal LM."""
    text = LlamaForCausalLM.from_pretrained(tiny_llama).eval()
    unet = UNet2DConditionModel.from_pretrained(tiny_sd, subfolder="unet").eval()
    ckpt = write_official_checkpoint(tmp_path_factory.mktemp("official") / "llama2_unet", text,
                                     {"LlamaAttention"}, unet)
    write_official_adapter(ckpt / "adapter")
    return SimpleNamespace(ckpt=ckpt, text=text)


@pytest.fixture(scope="module")
def official_t5_transformer(tiny_t5, tiny_pixart, tmp_path_factory):
    """As above for t5_transformer (T5 + PixArt, LoRA on the transformer's Attention/GEGLU)."""
    text = T5EncoderModel.from_pretrained(tiny_t5).eval()
    transformer = PixArtTransformer2DModel.from_pretrained(tiny_pixart, subfolder="transformer").eval()
    ckpt = write_official_checkpoint(tmp_path_factory.mktemp("official") / "t5_transformer", text,
                                     {"T5Attention"}, transformer, TRANSFORMER_TARGETS)
    write_official_adapter(ckpt / "adapter")
    return SimpleNamespace(ckpt=ckpt, text=text, transformer=transformer)


@pytest.fixture
def ckpt_copy(official_t5_unet, tmp_path) -> Path:
    """A t5_unet checkpoint a test may break."""
    return Path(shutil.copytree(official_t5_unet.ckpt, tmp_path / "ckpt"))


def load_converted(bridge: Path, text_encoder: str, vision_model: str) -> LaViBridge:
    return LaViBridge(text_encoder, vision_model, max_length=16, adapter=dict(ADAPTER_DIMS),
                      text_lora=dict(rank=RANK), vision_lora=dict(rank=RANK),
                      bridge_path=str(bridge)).eval()


@torch.no_grad()
def test_t5_unet_conversion_matches_the_papers_injection(official_t5_unet, tiny_t5, tiny_sd,
                                                        tmp_path):
    out = convert_official_checkpoint(official_t5_unet.ckpt, "t5_unet", tmp_path / "bridge",
                                      text_encoder=tiny_t5, vision_model=tiny_sd)
    assert out == tmp_path / "bridge"
    manifest = json.loads((out / "bridge.json").read_text())
    assert manifest["source"] == "official" and manifest["combo"] == "t5_unet"
    assert manifest["text_encoder"] == tiny_t5 and manifest["vision_model"] == tiny_sd
    for part in ("text_lora", "vision_lora"):
        lora = json.loads((out / part / "adapter_config.json").read_text())
        # rank inferred from the tensors, scale 1, the paper's dropout for further training
        assert (lora["r"], lora["lora_alpha"], lora["lora_dropout"]) == (RANK, RANK, 0.1)

    model = load_converted(out, tiny_t5, tiny_sd)
    ids, mask = model.language.tokenize(CAPTIONS, torch.device("cpu"))
    hidden = model.language(ids, mask)
    torch.testing.assert_close(hidden, official_t5_unet.text(input_ids=ids).last_hidden_state,
                               rtol=1e-4, atol=1e-4)
    without_lora = T5EncoderModel.from_pretrained(tiny_t5).eval()(input_ids=ids).last_hidden_state
    assert (hidden - without_lora).abs().max() > 1e-2  # the LoRA is really there

    torch.manual_seed(0)
    latents, context = torch.randn(2, 4, 16, 16), torch.randn(2, 16, 32)
    timesteps = torch.tensor([10, 500])
    sample = model.unet(latents, timesteps, encoder_hidden_states=context).sample
    expected = official_t5_unet.unet(latents, timesteps, encoder_hidden_states=context).sample
    torch.testing.assert_close(sample, expected, rtol=1e-4, atol=1e-4)
    without_lora = UNet2DConditionModel.from_pretrained(tiny_sd, subfolder="unet").eval()
    assert (sample - without_lora(latents, timesteps, encoder_hidden_states=context).sample
            ).abs().max() > 1e-2

    torch.testing.assert_close(model.adapter(hidden), official_t5_unet.adapter(hidden))


@torch.no_grad()
def test_llama2_unet_conversion_matches_the_papers_injection(official_llama_unet, tiny_llama,
                                                            tiny_sd, tmp_path):
    out = convert_official_checkpoint(official_llama_unet.ckpt, "llama2_unet", tmp_path / "bridge",
                                      text_encoder=tiny_llama, vision_model=tiny_sd)
    model = LaViBridge.from_bridge(out).eval()  # with the authors' padding, which the bridge records
    ids, mask = model.language.tokenize(CAPTIONS, torch.device("cpu"))
    # the authors' inference: no attention mask, the causal LM's last (normed) hidden state
    expected = official_llama_unet.text(input_ids=ids, output_hidden_states=True).hidden_states[-1]
    torch.testing.assert_close(model.language(ids, mask), expected, rtol=1e-4, atol=1e-4)


@torch.no_grad()
def test_t5_transformer_conversion_matches_the_papers_injection(official_t5_transformer, tiny_t5,
                                                               tiny_pixart, tmp_path):
    out = convert_official_checkpoint(official_t5_transformer.ckpt, "t5_transformer",
                                      tmp_path / "bridge", text_encoder=tiny_t5,
                                      vision_model=tiny_pixart)
    manifest = json.loads((out / "bridge.json").read_text())
    # the authors' PixArt run: 120 tokens, the padding mask given to T5 (and to the transformer)
    assert (manifest["max_length"], manifest["text_attention_mask"]) == (120, True)
    model = LaViBridge.from_bridge(out).eval()
    ids, mask = model.language.tokenize(CAPTIONS, torch.device("cpu"))
    expected = official_t5_transformer.text(input_ids=ids, attention_mask=mask).last_hidden_state
    torch.testing.assert_close(model.language(ids, mask), expected, rtol=1e-4, atol=1e-4)

    torch.manual_seed(0)
    latents, context = torch.randn(2, 4, 16, 16), torch.randn(2, 120, 32)
    kwargs = dict(encoder_hidden_states=context, timestep=torch.tensor([10, 500]),
                  encoder_attention_mask=mask,
                  added_cond_kwargs={"resolution": None, "aspect_ratio": None})
    sample = model.transformer(latents, **kwargs).sample
    torch.testing.assert_close(sample, official_t5_transformer.transformer(latents, **kwargs).sample,
                               rtol=1e-4, atol=1e-4)
    without_lora = PixArtTransformer2DModel.from_pretrained(tiny_pixart, subfolder="transformer")
    assert (sample - without_lora.eval()(latents, **kwargs).sample).abs().max() > 1e-2


def test_official_order_is_lora_target_names_and_keeps_nested_repeats(tiny_t5, tiny_llama, tiny_sd,
                                                                      tiny_pixart):
    unet = UNet2DConditionModel.from_pretrained(tiny_sd, subfolder="unet")
    transformer = PixArtTransformer2DModel.from_pretrained(tiny_pixart, subfolder="transformer")
    t5 = T5EncoderModel.from_pretrained(tiny_t5)
    llama = LlamaForCausalLM.from_pretrained(tiny_llama).model
    for model, targets in ((unet, UNET_TARGETS), (transformer, TRANSFORMER_TARGETS),
                           (t5, {"T5Attention"}), (llama, {"LlamaAttention"})):
        names = lora_target_names(model, targets)
        inject_lora(model, targets, rank=RANK)
        assert official_lora_layers(model, targets) == names

    class Inner(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = nn.Linear(4, 4)

    class Outer(nn.Module):
        def __init__(self):
            super().__init__()
            self.first, self.inner, self.last = nn.Linear(4, 4), Inner(), nn.Conv2d(4, 4, 3)

    nested = nn.Sequential(Outer())
    assert lora_target_names(nested, {"Outer", "Inner"}) == ["0.first", "0.inner.proj", "0.last"]
    inject_lora(nested, {"Outer", "Inner"}, rank=2)
    # the authors' walk visits the inner layer once per target ancestor and saves it twice
    assert official_lora_layers(nested, {"Outer", "Inner"}) == [
        "0.first", "0.inner.proj", "0.last", "0.inner.proj"]


def convert(ckpt: Path, tiny_t5: str, tiny_sd: str, combo: str = "t5_unet") -> Path:
    return convert_official_checkpoint(ckpt, combo, ckpt.parent / "out", text_encoder=tiny_t5,
                                       vision_model=tiny_sd)


def mix_ranks(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    tensors[6], tensors[7] = tensors[6][:, :2], tensors[7][:2]  # pair 3 at rank 2
    return tensors


@pytest.mark.parametrize("edit, message", [
    (lambda t: t[:-1], "holds 129 tensors, an odd number"),
    (lambda t: t[:-2], "holds 128 tensors (64 up/down pairs), but the vision model"),
    (lambda t: t[:-2], "too few: truncated list"),
    (lambda t: t + t[:2], "too many, or the wrong combo?"),
    (mix_ranks, "tensor 6 (up of pair 3) is for layer 'down_blocks.0.attentions.0.transformer_blocks"
                ".0.attn1.to_out.0' (Linear 32->32) and should have shape (32, 4), got (32, 2). "
                "Its LoRA rank is 2, but the list's first pair has rank 4"),
    (lambda t: {"lora": t}, "should hold a list of tensors"),
    (lambda t: [], "holds an empty list"),
    (lambda t: [t[0][0], t[1]], "tensor 0 has shape (4,), but LoRA weights are 2-D"),
], ids=["odd", "truncated", "truncated-hint", "too-long", "mixed-rank", "not-a-list", "empty",
        "not-lora"])
def test_malformed_lora_lists_fail_with_their_message(ckpt_copy, tiny_t5, tiny_sd, edit, message):
    tensors = torch.load(ckpt_copy / "lora_vis.pt", weights_only=True)
    assert len(tensors) == 130
    torch.save(edit(tensors), ckpt_copy / "lora_vis.pt")
    with pytest.raises(ValueError, match=re.escape(message)) as error:
        convert(ckpt_copy, tiny_t5, tiny_sd)
    assert "lora_vis.pt" in str(error.value)
    assert not (ckpt_copy.parent / "out").exists()


def test_weights_of_another_combo_fail_with_a_shape_mismatch(ckpt_copy, official_llama_unet,
                                                             tiny_t5, tiny_sd):
    shutil.copy(official_llama_unet.ckpt / "lora_text.pt", ckpt_copy / "lora_text.pt")
    # tiny Llama's k_proj is 32->16 (grouped-query attention), T5's k is 32->32
    with pytest.raises(ValueError, match=re.escape(
            "lora_text.pt: tensor 2 (up of pair 1) is for layer "
            "'encoder.block.0.layer.0.SelfAttention.k' (Linear 32->32) and should have shape "
            "(32, 4), got (16, 4). Wrong combo? These weights do not fit the text encoder")):
        convert(ckpt_copy, tiny_t5, tiny_sd)


def test_adapter_of_another_combo_fails(ckpt_copy, tiny_t5, tiny_sd):
    shutil.rmtree(ckpt_copy / "adapter")
    write_official_adapter(ckpt_copy / "adapter", out_dim=16)
    with pytest.raises(ValueError, match=r"Cannot build the 't5_unet' model .*out_dim=16 does not "
                                         r"match .*wrong combo"):
        convert(ckpt_copy, tiny_t5, tiny_sd)


@pytest.mark.parametrize("missing", ["lora_vis.pt", "lora_text.pt", "adapter"])
def test_missing_files_are_named(ckpt_copy, tiny_t5, tiny_sd, missing):
    path = ckpt_copy / missing
    shutil.rmtree(path) if path.is_dir() else path.unlink()
    with pytest.raises(FileNotFoundError, match=re.escape(missing)):
        convert(ckpt_copy, tiny_t5, tiny_sd)


def test_unknown_combo(ckpt_copy, tiny_t5, tiny_sd):
    with pytest.raises(ValueError, match="Unknown official combo 'sdxl_unet'; supported: "
                                         "t5_unet, llama2_unet, t5_transformer"):
        convert(ckpt_copy, tiny_t5, tiny_sd, combo="sdxl_unet")


@pytest.mark.parametrize("combo, expected", [
    ("t5_transformer", "combo 't5_transformer' bridges a t5 language model to a transformer/ denoiser"),
    ("llama2_unet", "combo 'llama2_unet' bridges a llama language model to a unet/ denoiser"),
])
def test_a_combo_of_other_base_model_kinds_is_refused_before_any_weights_load(ckpt_copy, tiny_t5, tiny_sd,
                                                                              combo, expected, monkeypatch):
    from diffengine.models.editors.lavi_bridge import official_weights

    def never(*args, **kwargs):
        raise AssertionError("the base models were loaded")

    # the t5_unet release converted as another combo: LoRA lists of the same shapes would fit
    monkeypatch.setattr(official_weights, "LaViBridge", never)
    with pytest.raises(ValueError) as error:
        convert(ckpt_copy, tiny_t5, tiny_sd, combo=combo)
    assert str(error.value) == (f"{expected}, but {tiny_t5} is t5 and {tiny_sd} has a unet/ denoiser: use "
                                "combo 't5_unet'")
    assert not (ckpt_copy.parent / "out").exists()


def test_reduced_precision_base_models_keep_the_exact_lora_values(ckpt_copy, tiny_t5, tiny_sd):
    out = convert_official_checkpoint(ckpt_copy, "t5_unet", ckpt_copy.parent / "out",
                                      text_encoder=tiny_t5, vision_model=tiny_sd,
                                      weight_dtype="bfloat16")
    assert json.loads((out / "bridge.json").read_text())["weight_dtype"] == "bfloat16"
    saved = load_file(out / "text_lora" / "adapter_model.safetensors")
    official = torch.load(ckpt_copy / "lora_text.pt", weights_only=True)
    for key, tensor in (("lora_B", official[0]), ("lora_A", official[1])):  # up_0, down_0
        value = saved[f"encoder.block.0.layer.0.SelfAttention.q.{key}.weight"]
        assert value.dtype == torch.float32
        torch.testing.assert_close(value, tensor.float(), rtol=0, atol=0)
    with pytest.raises(ValueError, match="weight_dtype must be one of"):
        convert_official_checkpoint(ckpt_copy, "t5_unet", ckpt_copy.parent / "out2",
                                    weight_dtype="int8")


def test_convert_official_command_then_from_bridge(official_t5_unet, tiny_t5, tiny_sd, tmp_path,
                                                   capsys):
    from diffengine.entry_point import main

    args = ["--combo", "t5_unet", "--text-encoder", tiny_t5, "--vision-model", tiny_sd]
    assert main(["convert-official", str(official_t5_unet.ckpt), str(tmp_path / "b"), *args]) == 0
    assert "model.bridge_path=" in capsys.readouterr().out
    model = LaViBridge.from_bridge(tmp_path / "b")
    assert model.vision_lora_config.r == RANK
    assert dict(model.adapter.config)["int_dim"] == ADAPTER_DIMS["int_dim"]
    assert main(["convert-official", str(tmp_path / "nothing"), str(tmp_path / "c"), *args]) == 2
    assert "diffengine: error: " in capsys.readouterr().err


def test_the_cli_combo_names_are_the_converter_combos():
    from diffengine.constants import OFFICIAL_COMBO_NAMES
    from diffengine.models.editors.lavi_bridge.official_weights import OFFICIAL_COMBOS

    assert tuple(OFFICIAL_COMBOS) == OFFICIAL_COMBO_NAMES
