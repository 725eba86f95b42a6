"""A frozen pretrained language model with its tokenizer, returning the hidden states to bridge."""
import torch
import transformers
from torch import nn
from transformers import AutoConfig, AutoModel, AutoTokenizer

from .families import language_family_of


class FrozenLanguageModel(nn.Module):
    """Tokenizer + language model loaded with ``from_pretrained``; frozen, LoRA added by the caller.

    Encoder(-decoder) models give the encoder's last hidden state; decoder-only LMs give the final
    normed hidden state of the base model (no LM head is built, so no logits are computed).
    """

    def __init__(self, pretrained: str, max_length: int = 77, hidden_layer: int = -1,
                 use_attention_mask: bool = False, dtype: torch.dtype | None = None):
        super().__init__()
        config = AutoConfig.from_pretrained(pretrained)
        self.family = language_family_of(config.model_type)
        model_cls = (AutoModel if self.family.model_class is None else getattr(
            transformers, self.family.model_class))
        self.model = model_cls.from_pretrained(pretrained, dtype=dtype)
        self.model.requires_grad_(False)
        self.tokenizer = AutoTokenizer.from_pretrained(pretrained)
        if self.tokenizer.pad_token is None:
            # decoder-only LMs often ship without one; padding needs it
            self.tokenizer.pad_token = self.tokenizer.eos_token or self.tokenizer.unk_token
        self.tokenizer.padding_side = "right"
        self.max_length = max_length
        self.hidden_layer = hidden_layer
        self.use_attention_mask = use_attention_mask
        self.hidden_size = config.hidden_size if hasattr(config, "hidden_size") else config.d_model

    def tokenize(self, texts: list[str], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids and attention mask, padded/truncated to ``max_length``."""
        tokens = self.tokenizer(list(texts), padding="max_length", max_length=self.max_length,
                                truncation=True, return_tensors="pt")
        return (tokens.input_ids.to(device, non_blocking=True),
                tokens.attention_mask.to(device, non_blocking=True))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Hidden states (batch, max_length, hidden_size) of the configured layer."""
        mask = attention_mask if self.use_attention_mask else None
        if self.hidden_layer == -1:
            return self.model(input_ids=input_ids, attention_mask=mask).last_hidden_state
        outputs = self.model(input_ids=input_ids, attention_mask=mask, output_hidden_states=True)
        return outputs.hidden_states[self.hidden_layer]
