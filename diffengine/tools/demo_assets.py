"""Deterministic offline demo and test assets: tiny LMs, SD and PixArt models, ShapesBench shards.

Everything is built from configs and saved with ``save_pretrained`` so it loads back through the
same ``from_pretrained`` code path as real hub models. Tests use the same builders. Tokenizers
are trained on ShapesBench's captions.
"""
import json
import shutil
from pathlib import Path

from diffengine.datasets.shapes import caption_corpus


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
    spm_model = _train_sentencepiece(corpus or caption_corpus(), out_dir / "spiece", 64)
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


def word_level_tokenizer(corpus: list[str], **special_tokens: str):
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
    tokenizer = word_level_tokenizer(corpus or caption_corpus(), unk_token="<unk>",
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
    tokenizer = word_level_tokenizer(corpus or caption_corpus(), unk_token="[UNK]",
                                      pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]")
    tokenizer.save_pretrained(out_dir)
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=hidden_size, num_hidden_layers=2,
                        num_attention_heads=4, intermediate_size=2 * hidden_size,
                        max_position_embeddings=128, pad_token_id=tokenizer.pad_token_id)
    BertModel(config).save_pretrained(out_dir)
    return out_dir


def _save_tiny_vae(out_dir: Path, image_size: int, **latent_space: float) -> None:
    """A tiny ``AutoencoderKL`` with 4 latent channels and downscale 2, saved to ``out_dir``
    (``latent_space``: its ``scaling_factor`` and ``shift_factor``, as SD3's and Flux's VAEs set)."""
    from diffusers import AutoencoderKL

    AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(16, 32),
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        norm_num_groups=8, layers_per_block=1, sample_size=image_size, **latent_space).save_pretrained(out_dir)


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


def make_tiny_sdxl(out_dir: str | Path, cross_attention_dim: int = 32, pooled_dim: int = 16,
                   addition_time_embed_dim: int = 8, sample_size: int = 16, seed: int = 0) -> Path:
    """A tiny SDXL-style base model folder: a ``text_time`` ``unet/`` (pooled text + six time ids),
    ``vae/`` (downscale 2) and SDXL's ``scheduler/``."""
    import torch
    from diffusers import EulerDiscreteScheduler, UNet2DConditionModel

    out_dir = Path(out_dir)
    torch.manual_seed(seed)
    # SDXL base's layout at toy width: no attention in the first block, linear projections
    UNet2DConditionModel(
        sample_size=sample_size, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(32, 64), norm_num_groups=8, attention_head_dim=8,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), use_linear_projection=True,
        cross_attention_dim=cross_attention_dim, addition_embed_type="text_time",
        addition_time_embed_dim=addition_time_embed_dim,
        projection_class_embeddings_input_dim=pooled_dim + 6 * addition_time_embed_dim,
    ).save_pretrained(out_dir / "unet")
    _save_tiny_vae(out_dir / "vae", 2 * sample_size)
    # SDXL base's scheduler config (its training schedule is SD1.x's)
    EulerDiscreteScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                           beta_schedule="scaled_linear", prediction_type="epsilon",
                           steps_offset=1, timestep_spacing="leading").save_pretrained(out_dir / "scheduler")
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


def make_tiny_sd3(out_dir: str | Path, joint_attention_dim: int = 32, pooled_dim: int = 16,
                  sample_size: int = 16, seed: int = 0) -> Path:
    """A tiny SD3.5-style base model folder: an MMDiT ``transformer/`` (one dual-attention layer,
    RMS qk-norm), a ``vae/`` with a shift factor and SD3's flow-matching ``scheduler/``."""
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel

    out_dir = Path(out_dir)
    torch.manual_seed(seed)
    SD3Transformer2DModel(
        sample_size=sample_size, patch_size=2, in_channels=4, out_channels=4, num_layers=2,
        attention_head_dim=8, num_attention_heads=2, joint_attention_dim=joint_attention_dim,
        caption_projection_dim=16, pooled_projection_dim=pooled_dim, pos_embed_max_size=sample_size,
        dual_attention_layers=(0,), qk_norm="rms_norm").save_pretrained(out_dir / "transformer")
    _save_tiny_vae(out_dir / "vae", 2 * sample_size, scaling_factor=1.5305, shift_factor=0.0609)
    FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0).save_pretrained(out_dir / "scheduler")
    return out_dir


def make_tiny_flux(out_dir: str | Path, joint_attention_dim: int = 32, pooled_dim: int = 16,
                   sample_size: int = 16, seed: int = 0) -> Path:
    """A tiny FLUX.1-dev-style base model folder: a guidance-distilled ``transformer/`` (one
    double- and one single-stream block), a ``vae/`` with a shift factor and Flux's ``scheduler/``."""
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel

    out_dir = Path(out_dir)
    torch.manual_seed(seed)
    # in_channels: 4 latent channels packed in 2 x 2 patches; the rotary axes add up to the head width
    FluxTransformer2DModel(
        patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=8,
        num_attention_heads=2, joint_attention_dim=joint_attention_dim, pooled_projection_dim=pooled_dim,
        guidance_embeds=True, axes_dims_rope=(2, 2, 4)).save_pretrained(out_dir / "transformer")
    _save_tiny_vae(out_dir / "vae", 2 * sample_size, scaling_factor=0.3611, shift_factor=0.1159)
    # FLUX.1-dev's scheduler config: its shift depends on the image's token count at inference
    FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True,
                                    base_shift=0.5, max_shift=1.15, base_image_seq_len=256,
                                    max_image_seq_len=4096).save_pretrained(out_dir / "scheduler")
    return out_dir


def make_demo_assets(out_dir: str | Path, num_images: int = 2048, images_per_shard: int = 1024,
                     progress: bool = True) -> Path:
    """Write the whole demo under ``out_dir`` (idempotent): ``t5/`` (a tiny random T5 encoder),
    ``stage1/`` (a copy of ShapesBench's packaged stage-1 model) and ``shards/`` (ShapesBench
    training images, 32 px)."""
    from diffengine.datasets.shapes import IMAGE_SIZE

    from .shapes_assets import write_shape_shards
    from .shapesbench import STAGE1_ASSET, verify_stage1

    out_dir = Path(out_dir)
    done = out_dir / "demo_assets.json"
    if done.is_file():
        return out_dir
    t5_dir, stage1_dir, shards_dir = demo_folders(out_dir)
    make_tiny_t5(t5_dir)
    verify_stage1(STAGE1_ASSET)
    shutil.copytree(STAGE1_ASSET, stage1_dir, dirs_exist_ok=True)
    shards = write_shape_shards(shards_dir, num_images, images_per_shard=images_per_shard, progress=progress)
    done.write_text(json.dumps({"num_images": num_images, "image_size": IMAGE_SIZE, "shards": shards}, indent=2))
    return out_dir


def demo_folders(data_dir: str | Path) -> tuple[Path, Path, Path]:
    """The demo's text encoder, stage-1 model and shard folders under ``data_dir``."""
    data = Path(data_dir)
    return data / "t5", data / "stage1", data / "shards"


def demo_overrides(t5_dir: Path, stage1_dir: Path, shards_dir: Path) -> list[str]:
    """``--cfg-options`` that point the demo config at the demo's models and its first two shards."""
    return [f"model.text_encoder={t5_dir}", f"model.vision_model={stage1_dir}",
            f"train_dataloader.shards={shards_dir}/{{00000..00001}}.tar"]
