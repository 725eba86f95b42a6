"""Language-model side of a bridge: loading, tokenizing and hidden states per LM family."""
from .families import LANGUAGE_FAMILIES, LanguageFamily, language_family_of
from .language_model import (
    LanguageModel,
    check_caption_dropout,
    check_pad_token,
    checked_language_model_config,
    drop_captions,
    hidden_width,
    lm_hidden_states,
    tokenize_prompts,
    truncated_parts,
)

__all__ = ["LANGUAGE_FAMILIES", "LanguageFamily", "language_family_of", "LanguageModel",
           "check_caption_dropout", "check_pad_token", "checked_language_model_config", "drop_captions", "hidden_width",
           "lm_hidden_states", "tokenize_prompts", "truncated_parts"]
