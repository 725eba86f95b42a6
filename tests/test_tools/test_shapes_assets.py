import shutil

import pytest
import torch

from diffengine.datasets.shapes import caption_corpus
from diffengine.tools.shapes_assets import installed_minilm, make_pretrained_tiny_llama, text_corpus, write_shape_shards
from diffengine.tools.shapesbench import STAGE1_ASSET, verify_stage1


def test_installed_minilm_loads_as_sentence_transformers_does(tiny_sd):
    from sentence_transformers import SentenceTransformer

    from diffengine.models import LaViBridge

    folder = installed_minilm()
    # with the padding mask, the states of the real tokens are the reference's exactly
    bridge = LaViBridge(str(folder), tiny_sd, max_length=16, text_attention_mask=True)
    assert type(bridge.language.model).__name__ == "BertModel"
    assert bridge.language.hidden_size == 384 and bridge.text_lora_config is not None
    ids, mask = bridge.language.tokenize(["a red circle on a blue background"], bridge.device)
    with torch.no_grad():
        ours = bridge.language(ids, mask)[0, : int(mask.sum())]
    reference = SentenceTransformer(str(folder), device="cpu").encode(
        "a red circle on a blue background", output_value="token_embeddings", convert_to_tensor=True)
    torch.testing.assert_close(ours, reference, atol=1e-4, rtol=1e-4)


def test_tiny_llama_is_pretrained_on_text_and_loads_as_a_bridge_lm(tmp_path, tiny_sd):
    from transformers import AutoTokenizer, LlamaForCausalLM

    from diffengine.models import LaViBridge

    corpus = set(text_corpus(2000, seed=1))
    assert not corpus & set(caption_corpus())  # the LM never reads a caption of the world, in any phrasing
    assert {"a tomato is red", "a red tomato", "an orange circle is round and has no corners"} <= corpus
    folder = make_pretrained_tiny_llama(tmp_path / "llama", steps=40, progress=False)
    model = LlamaForCausalLM.from_pretrained(folder)
    untrained_loss = torch.log(torch.tensor(float(model.config.vocab_size))).item()
    assert model.config.pretraining["final_loss"] < 0.5 * untrained_loss
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert tokenizer.pad_token is None  # as Llama's; the bridge pads with eos
    ids = tokenizer("a red circle").input_ids  # starts with <s>, as in pretraining
    assert ids[0] == tokenizer.bos_token_id and len(ids) == 4
    # with the padding mask, the states of the real tokens are the reference's exactly
    bridge = LaViBridge(str(folder), tiny_sd, max_length=16, text_attention_mask=True)
    assert type(bridge.language.model).__name__ == "LlamaModel"


def test_shards_are_written_once(tmp_path):
    pattern = write_shape_shards(tmp_path, 40, images_per_shard=16, progress=False)
    assert pattern == f"{tmp_path}/{{00000..00002}}.tar"
    stamp = (tmp_path / "00000.tar").stat().st_mtime_ns
    assert write_shape_shards(tmp_path, 40, images_per_shard=16, progress=False) == pattern
    assert (tmp_path / "00000.tar").stat().st_mtime_ns == stamp


def test_packaged_stage1_matches_its_checksums_and_a_changed_file_is_caught(tmp_path):
    verify_stage1(STAGE1_ASSET)
    copy = shutil.copytree(STAGE1_ASSET, tmp_path / "stage1")
    # what a stage-1 write cut short by a crash leaves inside: not part of the folder's weights
    shutil.copytree(copy / "unet", copy / ".partial" / "unet")
    (copy / ".partial" / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"cut sho")
    verify_stage1(copy)
    weights = copy / "unet" / "diffusion_pytorch_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="do not match the checksums"):
        verify_stage1(copy)
    with pytest.raises(FileNotFoundError, match="SOURCE.md"):
        verify_stage1(tmp_path)
    assert sum(f.stat().st_size for f in STAGE1_ASSET.rglob("*") if f.is_file()) <= 10 * 2 ** 20
