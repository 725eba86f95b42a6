"""Any language model family bridges by config alone: tiny versions train and sample."""
import pytest
import torch
from accelerate import init_empty_weights
from transformers import LlamaConfig, LlamaModel

from diffengine.models import LaViBridge
from diffengine.models.language import LANGUAGE_FAMILIES, language_family_of
from diffengine.models.lora import inject_lora, lora_target_names
from diffengine.tools.demo_assets import make_tiny_bert, make_tiny_causal_lm
from tests.helpers import TWO_CAPTIONS, train_briefly

# which Linear layers of each family get LoRA (the attention projections)
EXPECTED_LORA = {
    "t5": {"q", "k", "v", "o"},
    "llama": {"q_proj", "k_proj", "v_proj", "o_proj"},
    "mistral": {"q_proj", "k_proj", "v_proj", "o_proj"},
    "qwen2": {"q_proj", "k_proj", "v_proj", "o_proj"},
    "gemma": {"q_proj", "k_proj", "v_proj", "o_proj"},
    "bert": {"query", "key", "value", "dense"},
}


@pytest.fixture(scope="module")
def language_models(tmp_path_factory, tiny_t5):
    paths = {"t5": tiny_t5}
    for family in ("llama", "mistral", "qwen2", "gemma"):
        paths[family] = str(make_tiny_causal_lm(tmp_path_factory.mktemp(family), family))
    paths["bert"] = str(make_tiny_bert(tmp_path_factory.mktemp("bert")))
    return paths


@pytest.mark.parametrize("family", sorted(EXPECTED_LORA))
def test_family_trains_and_samples(family, language_models, tiny_sd):
    model = LaViBridge(language_models[family], tiny_sd, max_length=16,
                       text_lora=dict(rank=4, dropout=0.0), vision_lora=dict(rank=4, dropout=0.0))
    assert model.language.tokenizer.pad_token is not None
    lora_layers = {n.split(".")[-4] for n, _ in model.language.model.named_parameters()
                   if n.endswith("lora_A.default.weight")}
    assert lora_layers == EXPECTED_LORA[family]
    before, after = train_briefly(model)
    assert after < before
    image = model.infer("a red circle", num_inference_steps=2, height=32, width=32,
                        output_type="np")
    assert image.shape == (1, 32, 32, 3)


def test_hidden_layer_option_selects_that_layer(language_models, tiny_sd):
    last = LaViBridge(language_models["llama"], tiny_sd, max_length=16)
    earlier = LaViBridge(language_models["llama"], tiny_sd, max_length=16, hidden_layer=-2)
    ids, mask = last.language.tokenize(list(TWO_CAPTIONS), torch.device("cpu"))
    reference = earlier.language.model(input_ids=ids, output_hidden_states=True).hidden_states[-2]
    torch.testing.assert_close(earlier.language(ids, mask), reference)
    assert not torch.allclose(earlier.language(ids, mask), last.language(ids, mask))


def test_unknown_family_is_a_clear_error():
    with pytest.raises(ValueError, match="no LaVi-Bridge family"):
        language_family_of("gpt_neox")
    assert language_family_of("t5") is LANGUAGE_FAMILIES["t5"]


def test_llama2_7b_lora_targets_and_count():
    config = LlamaConfig(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                         num_attention_heads=32, num_key_value_heads=32, vocab_size=32000)
    with init_empty_weights():
        model = LlamaModel(config)
    assert sum(p.numel() for p in model.parameters()) == 6_607_343_616  # Llama-2-7B minus LM head
    classes = LANGUAGE_FAMILIES["llama"].lora_target_classes
    assert len(lora_target_names(model, classes)) == 32 * 4
    inject_lora(model, classes, rank=32)
    trainable = sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)
    assert trainable == 32 * 4 * 32 * (4096 + 4096)


def test_pad_token_option_pads_with_that_token_and_travels_with_the_bridge(language_models,
                                                                           tiny_sd, tmp_path):
    from diffengine.models import LaViBridgePipeline

    default = LaViBridge(language_models["llama"], tiny_sd, max_length=16)
    assert default.language.tokenizer.pad_token == "</s>"  # no pad token of its own: eos
    model = LaViBridge(language_models["llama"], tiny_sd, max_length=16, pad_token="<unk>")
    tokenizer = model.language.tokenizer
    ids, mask = model.language.tokenize(list(TWO_CAPTIONS), torch.device("cpu"))
    assert (ids[mask == 0] == tokenizer.unk_token_id).all() and (mask == 0).any()
    model.save_bridge(tmp_path / "bridge")
    assert LaViBridge.from_bridge(tmp_path / "bridge").language.tokenizer.pad_token == "<unk>"
    # an exported pipeline re-creates the tokenizer from its folder, pad token included
    LaViBridgePipeline.from_model(model).save_pretrained(tmp_path / "pipeline")
    assert LaViBridgePipeline.from_pretrained(tmp_path / "pipeline").tokenizer.pad_token == "<unk>"
    # the authors' "[PAD]" is not in Llama's vocabulary: say which token it would really be
    with pytest.raises(ValueError, match=r"pad_token '\[PAD\]' is not in the vocabulary.*'<unk>'"):
        LaViBridge(language_models["llama"], tiny_sd, max_length=16, pad_token="[PAD]")


def test_max_length_beyond_absolute_position_embeddings_is_refused_before_loading(tiny_bert, tiny_llama, monkeypatch):
    import transformers

    from diffengine.models.language import LanguageModel

    monkeypatch.setattr(transformers.AutoModel, "from_pretrained", lambda *a, **k: pytest.fail("weights loaded"))
    with pytest.raises(ValueError, match=f"max_length=129 does not fit {tiny_bert}: its position embeddings take "
                                         "at most 128 tokens"):
        LanguageModel(tiny_bert, max_length=129)
    with pytest.raises(ValueError, match="max_length must be >= 1, got 0"):
        LanguageModel(tiny_bert, max_length=0)
    monkeypatch.undo()
    # rotary positions (Llama) reach past max_position_embeddings: allowed
    assert LanguageModel(tiny_llama, max_length=200).max_length == 200
