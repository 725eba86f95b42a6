"""A frozen pretrained language model with its tokenizer, returning the hidden states to bridge."""
import logging

import torch
import transformers
from mmengine.logging import print_log
from torch import nn
from transformers import AutoConfig, AutoModel, AutoTokenizer

from .families import language_family_of


def tokenize_prompts(tokenizer, texts: list[str], max_length: int):
    """Token ids and attention mask, right-padded/truncated to ``max_length`` (as in training)."""
    # padding_side per call: a tokenizer's padding side set after loading is not saved with it
    return tokenizer(list(texts), padding="max_length", max_length=max_length, truncation=True,
                     padding_side="right", return_tensors="pt")


def truncated_parts(tokenizer, texts: list[str], max_length: int) -> list[str]:
    """The words of each text that ``tokenize_prompts`` cuts off at ``max_length`` tokens ("" when
    it fits): special tokens are added after truncation, so they take room from the text."""
    parts = []
    for text, ids in zip(texts, tokenizer(list(texts)).input_ids, strict=True):
        if len(ids) <= max_length:  # every prompt that fits costs only this one batched call
            parts.append("")
            continue
        text_ids = tokenizer(text, add_special_tokens=False).input_ids
        parts.append(tokenizer.decode(text_ids[max_length - (len(ids) - len(text_ids)):]).strip())
    return parts


def check_caption_dropout(probability: float) -> None:
    """A caption dropout probability in [0, 1): at 1 every caption would be dropped, and the model
    would train only the unconditional branch, deaf to the text, without an error."""
    if isinstance(probability, bool) or not isinstance(probability, int | float) or not 0 <= probability < 1:
        raise ValueError(f"caption_dropout must be in [0, 1) (1 would drop every caption), got {probability!r}")


def drop_captions(texts: list[str], probability: float) -> list[str]:
    """Each caption replaced by "" with ``probability`` (trains the unconditional branch of CFG)."""
    if probability == 0.0:
        return list(texts)
    keep = (torch.rand(len(texts)) >= probability).tolist()
    return [text if kept else "" for text, kept in zip(texts, keep, strict=True)]


def lm_hidden_states(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                     hidden_layer: int = -1, use_attention_mask: bool = False) -> torch.Tensor:
    """The hidden states a bridge consumes: layer ``hidden_layer`` (-1: the final normed one)."""
    mask = attention_mask if use_attention_mask else None
    if hidden_layer == -1:
        return model(input_ids=input_ids, attention_mask=mask).last_hidden_state
    outputs = model(input_ids=input_ids, attention_mask=mask, output_hidden_states=True)
    return outputs.hidden_states[hidden_layer]


def hidden_width(config) -> int:
    """The width of a language model's hidden states, from its config (``hidden_size``; T5's ``d_model``)."""
    return config.hidden_size if hasattr(config, "hidden_size") else config.d_model


def checked_language_model_config(pretrained: str, max_length: int, hidden_layer: int):
    """The LM's config, once ``max_length`` and ``hidden_layer`` are checked against it (no weights
    load) and its family is known."""
    config = AutoConfig.from_pretrained(pretrained)
    layers = getattr(config, "num_hidden_layers", None)
    if isinstance(layers, int) and not -(layers + 1) <= hidden_layer <= layers:
        raise ValueError(f"hidden_layer={hidden_layer} is out of range: {pretrained} has {layers} layers, "
                         f"so hidden_layer is -1 (the final normed state), 0 (the token embeddings) to "
                         f"{layers}, or -{layers + 1} to -2 counted from the end")
    positions = getattr(config, "max_position_embeddings", None)
    rotary = any("rope" in key for key in config.to_dict())  # rotary positions extend past it
    if max_length < 1:
        raise ValueError(f"max_length must be >= 1, got {max_length}")
    if isinstance(positions, int) and not rotary and max_length > positions:
        # absolute position embeddings: longer inputs fail with an IndexError at the first batch
        raise ValueError(f"max_length={max_length} does not fit {pretrained}: its position embeddings "
                         f"take at most {positions} tokens")
    language_family_of(config.model_type)
    return config


class LanguageModel(nn.Module):
    """Tokenizer + language model loaded with ``from_pretrained``, frozen (a bridge adds LoRA to it;
    ``StableDiffusion`` may unfreeze it to train its own text encoder).

    Encoder(-decoder) models give the encoder's last hidden state; decoder-only LMs give the final
    normed hidden state of the base model (no LM head is built, so no logits are computed).
    ``pad_token`` (a token of the vocabulary) replaces the tokenizer's pad token; by default the
    tokenizer's own is kept, and one without falls back to its eos (else unk) token. The tokenizer
    is loaded from ``tokenizer`` when given (diffusers folders keep it in ``tokenizer/``), else
    from ``pretrained``.
    """

    def __init__(self, pretrained: str, max_length: int = 77, hidden_layer: int = -1,
                 use_attention_mask: bool = False, dtype: torch.dtype | None = None,
                 pad_token: str | None = None, tokenizer: str | None = None):
        super().__init__()
        config = checked_language_model_config(pretrained, max_length, hidden_layer)
        self.family = language_family_of(config.model_type)
        model_cls = (AutoModel if self.family.model_class is None else getattr(
            transformers, self.family.model_class))
        # the tokenizer first: a pad token it lacks is refused before the weights load (minutes for 7B)
        self.tokenizer = AutoTokenizer.from_pretrained(tokenizer or pretrained)
        if pad_token is not None:
            self.tokenizer.pad_token = _vocabulary_token(self.tokenizer, pad_token, pretrained)
        elif self.tokenizer.pad_token is None:
            # decoder-only LMs often ship without one; padding needs it
            self.tokenizer.pad_token = self.tokenizer.eos_token or self.tokenizer.unk_token
        self.model = model_cls.from_pretrained(pretrained, dtype=dtype)
        self.model.requires_grad_(False)
        self.pad_token = pad_token
        self.max_length = max_length
        self.hidden_layer = hidden_layer
        self.use_attention_mask = use_attention_mask
        self.hidden_size = hidden_width(config)
        self._captions_checked = False

    def warn_truncated_captions(self, texts: list[str]) -> None:
        """On the first training batch only: a warning when ``max_length`` cuts captions, whose
        cut-off words then train nothing (inference warns per prompt, as diffusers does for CLIP)."""
        if self._captions_checked:
            return
        self._captions_checked = True
        cut = [(text, part) for text, part in zip(texts, truncated_parts(self.tokenizer, texts, self.max_length),
                                                  strict=True) if part]
        if cut:
            text, part = cut[0]
            print_log(f"{len(cut)} of the first batch's {len(texts)} captions are longer than max_length="
                      f"{self.max_length} tokens, and the language model never reads their ends (e.g. {part!r} "
                      f"of {text!r}): raise model.max_length", logger="current", level=logging.WARNING)

    def tokenize(self, texts: list[str], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids and attention mask, padded/truncated to ``max_length``."""
        tokens = tokenize_prompts(self.tokenizer, texts, self.max_length)
        return (tokens.input_ids.to(device, non_blocking=True),
                tokens.attention_mask.to(device, non_blocking=True))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Hidden states (batch, max_length, hidden_size) of the configured layer."""
        return lm_hidden_states(self.model, input_ids, attention_mask, self.hidden_layer,
                                self.use_attention_mask)


def check_pad_token(pretrained: str, pad_token: str) -> None:
    """Raise ValueError when ``pad_token`` is not in the tokenizer's vocabulary (reads the tokenizer only)."""
    _vocabulary_token(AutoTokenizer.from_pretrained(pretrained), pad_token, pretrained)


def _vocabulary_token(tokenizer, token: str, pretrained: str) -> str:
    """``token`` if the tokenizer knows it; a clear error for one it would silently encode as unk."""
    token_id = tokenizer.convert_tokens_to_ids(token)
    if token_id is None or (token_id == tokenizer.unk_token_id and token != tokenizer.unk_token):
        raise ValueError(f"pad_token '{token}' is not in the vocabulary of {pretrained}'s tokenizer "
                         f"(slow tokenizers encode it as unk, id {tokenizer.unk_token_id}); pass a "
                         f"token it has, e.g. '{tokenizer.unk_token}' for that id")
    return token
