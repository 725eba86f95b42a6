"""Deterministic offline demo and test assets: tiny LMs, SD and PixArt models, synthetic images.

Everything is built from configs and saved with ``save_pretrained`` so it loads back through the
same ``from_pretrained`` code path as real hub models. Tests use the same builders.
"""
import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

COLORS = {"red": (220, 30, 30), "green": (30, 180, 40), "blue": (30, 60, 220), "yellow": (240, 220, 30)}
BACKGROUNDS = {"white": (250, 250, 250), "black": (10, 10, 10)}
SHAPES = ("circle", "square", "triangle")


def demo_caption_corpus() -> list[str]:
    """Every caption the synthetic data can produce (also the tokenizer training corpus)."""
    return [f"a {c} {s} on a {b} background" for c in COLORS for s in SHAPES for b in BACKGROUNDS]


def _train_sentencepiece(corpus: list[str], out_prefix: Path, vocab_size: int) -> Path:
    import sentencepiece as spm

    text_file = out_prefix.with_suffix(".txt")
    text_file.write_text("\n".join(corpus * 4) + "\n")
    spm.SentencePieceTrainer.train(
        input=str(text_file), model_prefix=str(out_prefix), vocab_size=vocab_size,
        model_type="unigram", hard_vocab_limit=False, pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
        character_coverage=1.0, minloglevel=2)
    text_file.unlink()
    return out_prefix.with_suffix(".model")


def make_tiny_t5(out_dir: str | Path, corpus: list[str] | None = None, d_model: int = 32,
                 seed: int = 0) -> Path:
    """A 2-layer T5 encoder-decoder + sentencepiece T5 tokenizer, saved with save_pretrained."""
    import torch
    from transformers import T5Config, T5ForConditionalGeneration, T5Tokenizer

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    spm_model = _train_sentencepiece(corpus or demo_caption_corpus(), out_dir / "spiece", 64)
    # from_pretrained on a folder holding only spiece.model converts it (the real loading path)
    tokenizer = T5Tokenizer.from_pretrained(out_dir, extra_ids=0)
    spm_model.with_suffix(".vocab").unlink()
    tokenizer.save_pretrained(out_dir)
    torch.manual_seed(seed)
    config = T5Config(vocab_size=len(tokenizer), d_model=d_model, d_kv=8, d_ff=2 * d_model,
                      num_layers=2, num_heads=4, decoder_start_token_id=0, pad_token_id=0,
                      eos_token_id=1)
    T5ForConditionalGeneration(config).save_pretrained(out_dir)
    return out_dir


def _word_level_tokenizer(corpus: list[str], **special_tokens: str):
    """A fast word-level tokenizer trained on ``corpus`` (stands in for BPE/WordPiece ones)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.WordLevel(unk_token=special_tokens["unk_token"]))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.train_from_iterator(corpus, trainers.WordLevelTrainer(
        special_tokens=list(dict.fromkeys(special_tokens.values()))))
    return PreTrainedTokenizerFast(tokenizer_object=backend, **special_tokens)


def make_tiny_causal_lm(out_dir: str | Path, model_type: str = "llama",
                        corpus: list[str] | None = None, hidden_size: int = 32,
                        seed: int = 0) -> Path:
    """A 2-layer decoder-only LM (llama, mistral, qwen2, gemma, ...) whose tokenizer has no pad token."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = _word_level_tokenizer(corpus or demo_caption_corpus(), unk_token="<unk>",
                                      bos_token="<s>", eos_token="</s>")
    tokenizer.save_pretrained(out_dir)
    config = AutoConfig.for_model(
        model_type, vocab_size=len(tokenizer), hidden_size=hidden_size,
        intermediate_size=2 * hidden_size, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=hidden_size // 4, max_position_embeddings=128,
        bos_token_id=1, eos_token_id=2, pad_token_id=None)
    config.save_pretrained(out_dir)
    # the family's own tokenizer class may add special tokens (Qwen2's pad): size the
    # embedding for the tokenizer as AutoTokenizer will load it
    config.vocab_size = len(AutoTokenizer.from_pretrained(out_dir))
    torch.manual_seed(seed)
    AutoModelForCausalLM.from_config(config).save_pretrained(out_dir)
    return out_dir


def make_tiny_llama(out_dir: str | Path, **kwargs) -> Path:
    """A tiny Llama-style LM (see ``make_tiny_causal_lm``)."""
    return make_tiny_causal_lm(out_dir, "llama", **kwargs)


def make_tiny_bert(out_dir: str | Path, corpus: list[str] | None = None, hidden_size: int = 32,
                   seed: int = 0) -> Path:
    """A 2-layer BERT encoder with a word-level tokenizer."""
    import torch
    from transformers import BertConfig, BertModel

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = _word_level_tokenizer(corpus or demo_caption_corpus(), unk_token="[UNK]",
                                      pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]")
    tokenizer.save_pretrained(out_dir)
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=hidden_size, num_hidden_layers=2,
                        num_attention_heads=4, intermediate_size=2 * hidden_size,
                        max_position_embeddings=128, pad_token_id=tokenizer.pad_token_id)
    BertModel(config).save_pretrained(out_dir)
    return out_dir


def _save_tiny_vae(out_dir: Path, image_size: int) -> None:
    """A tiny ``AutoencoderKL`` with 4 latent channels and downscale 2, saved to ``out_dir``."""
    from diffusers import AutoencoderKL

    AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(16, 32),
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        norm_num_groups=8, layers_per_block=1, sample_size=image_size).save_pretrained(out_dir)


def make_tiny_sd(out_dir: str | Path, cross_attention_dim: int = 32, sample_size: int = 16,
                 prediction_type: str = "epsilon", seed: int = 0) -> Path:
    """A tiny SD-style base model folder: ``unet/``, ``vae/`` (downscale 2) and ``scheduler/``.

    ``cross_attention_dim=1024, prediction_type="v_prediction"`` makes it SD2-style.
    """
    import torch
    from diffusers import DDPMScheduler, UNet2DConditionModel

    out_dir = Path(out_dir)
    torch.manual_seed(seed)
    UNet2DConditionModel(
        sample_size=sample_size, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(32, 64), norm_num_groups=8, attention_head_dim=8,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=cross_attention_dim).save_pretrained(out_dir / "unet")
    _save_tiny_vae(out_dir / "vae", 2 * sample_size)
    # SD1.x's training schedule
    DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                  beta_schedule="scaled_linear", prediction_type=prediction_type,
                  steps_offset=1, clip_sample=False).save_pretrained(out_dir / "scheduler")
    return out_dir


def make_tiny_pixart(out_dir: str | Path, caption_channels: int = 32, sample_size: int = 16,
                     seed: int = 0) -> Path:
    """A tiny PixArt-alpha base model folder: ``transformer/`` (learned sigma), ``vae/``, ``scheduler/``."""
    import torch
    from diffusers import DPMSolverMultistepScheduler, PixArtTransformer2DModel

    out_dir = Path(out_dir)
    torch.manual_seed(seed)
    # PixArt-XL-2's layout at toy width: out_channels = 2 x in_channels (epsilon + variance)
    PixArtTransformer2DModel(
        num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=8, num_layers=2,
        sample_size=sample_size, patch_size=2, cross_attention_dim=16,
        caption_channels=caption_channels).save_pretrained(out_dir / "transformer")
    _save_tiny_vae(out_dir / "vae", 2 * sample_size)
    # PixArt-alpha ships its sampler's config; its betas are the linear schedule it trained with
    DPMSolverMultistepScheduler(num_train_timesteps=1000, beta_start=0.0001, beta_end=0.02,
                                beta_schedule="linear",
                                prediction_type="epsilon").save_pretrained(out_dir / "scheduler")
    return out_dir


def render_demo_image(color: str, shape: str, background: str, size: int,
                      rng: np.random.Generator) -> Image.Image:
    """One synthetic image: a coloured shape at a random place and scale on a plain background."""
    image = Image.new("RGB", (size, size), BACKGROUNDS[background])
    draw = ImageDraw.Draw(image)
    half = int(rng.integers(size // 5, size // 3))
    cx, cy = (int(v) for v in rng.integers(half, size - half, size=2))
    box = (cx - half, cy - half, cx + half, cy + half)
    if shape == "circle":
        draw.ellipse(box, fill=COLORS[color])
    elif shape == "square":
        draw.rectangle(box, fill=COLORS[color])
    else:
        draw.polygon([(cx, cy - half), (cx - half, cy + half), (cx + half, cy + half)],
                     fill=COLORS[color])
    return image


def demo_samples(num_images: int, size: int, seed: int = 0):
    """Yield ``(key, image, caption, metadata)`` for the synthetic demo set."""
    rng = np.random.default_rng(seed)
    for index in range(num_images):
        color = list(COLORS)[int(rng.integers(len(COLORS)))]
        shape = SHAPES[int(rng.integers(len(SHAPES)))]
        background = list(BACKGROUNDS)[int(rng.integers(len(BACKGROUNDS)))]
        caption = f"a {color} {shape} on a {background} background"
        image = render_demo_image(color, shape, background, size, rng)
        yield f"{index:06d}", image, caption, {"caption": caption}


def make_demo_assets(out_dir: str | Path, num_images: int = 512, image_size: int = 64,
                     images_per_shard: int = 128, progress: bool = True) -> Path:
    """Write the whole demo: ``t5/``, ``sd/`` and ``shards/`` under ``out_dir`` (idempotent)."""
    from diffengine.datasets import write_wds_shards

    out_dir = Path(out_dir)
    done = out_dir / "demo_assets.json"
    if done.is_file():
        return out_dir
    make_tiny_t5(out_dir / "t5")
    make_tiny_sd(out_dir / "sd")
    stats = write_wds_shards(demo_samples(num_images, image_size), out_dir / "shards",
                             maxcount=images_per_shard, image_format="png", progress=progress)
    done.write_text(json.dumps({"num_images": num_images, "image_size": image_size,
                                "shards": stats["shards"]}, indent=2))
    return out_dir
