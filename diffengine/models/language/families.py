"""One entry per language-model family: how to load it and where its LoRA goes."""
from dataclasses import dataclass


@dataclass(frozen=True)
class LanguageFamily:
    """How a family of language models plugs into a bridge."""

    model_types: tuple[str, ...]
    # transformers class that yields the hidden states we bridge (the encoder for encoder-decoders,
    # the base model without LM head for decoder-only LMs); None means ``AutoModel``.
    model_class: str | None
    # classes whose Linear layers get LoRA (the paper's TEXT_ENCODER_REPLACE_MODULES)
    lora_target_classes: tuple[str, ...]


LANGUAGE_FAMILIES: dict[str, LanguageFamily] = {
    "t5": LanguageFamily(("t5",), "T5EncoderModel", ("T5Attention",)),
    "mt5": LanguageFamily(("mt5",), "MT5EncoderModel", ("MT5Attention",)),
    "umt5": LanguageFamily(("umt5",), "UMT5EncoderModel", ("UMT5Attention",)),
    "llama": LanguageFamily(("llama",), None, ("LlamaAttention",)),
    "mistral": LanguageFamily(("mistral",), None, ("MistralAttention",)),
    "qwen2": LanguageFamily(("qwen2",), None, ("Qwen2Attention",)),
    "gemma": LanguageFamily(("gemma",), None, ("GemmaAttention",)),
    "bert": LanguageFamily(("bert",), None, ("BertAttention",)),
}


def language_family_of(model_type: str) -> LanguageFamily:
    """Return the family for a transformers ``model_type`` or raise a clear error."""
    for family in LANGUAGE_FAMILIES.values():
        if model_type in family.model_types:
            return family
    known = sorted(t for f in LANGUAGE_FAMILIES.values() for t in f.model_types)
    raise ValueError(f"Language model type '{model_type}' has no LaVi-Bridge family "
                     f"(known: {', '.join(known)}); add one to LANGUAGE_FAMILIES.")
