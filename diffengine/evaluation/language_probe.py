"""What a frozen language model's states say about ShapesBench captions, before any bridge is trained.

A small readout (per attribute, one learned query attending over the caption's token states, as the
denoiser's cross-attention reads the bridged context, then a linear classifier) is trained on the
training captions and tested on the two held-out sets. It tells a language model whose states
lack a phrasing-invariant trace of the attributes (no adapter alone can recover it) from one whose
bridge merely needs more training. ``leave_one_phrasing_out`` estimates the same from training
captions only (fit on three training phrasings, test on the fourth), so it may choose a layer
without touching the held-out sets.
"""
from __future__ import annotations

import torch
from torch import nn

from diffengine.datasets.shapes import (
    ATTRIBUTES,
    BACKGROUND_COLORS,
    FOREGROUND_COLORS,
    HELDOUT_PHRASINGS,
    SHAPES,
    TRAIN_PHRASINGS,
    ShapeSpec,
    heldout_specs,
    train_specs,
)
from diffengine.models.language import LanguageModel

ATTRIBUTE_VALUES: dict[str, tuple[str, ...]] = {
    "color": tuple(FOREGROUND_COLORS), "shape": SHAPES, "background": tuple(BACKGROUND_COLORS)}
READOUT_STEPS = 600


class AttributeReadout(nn.Module):
    """Per attribute: a learned query attends over the token states; a linear layer classifies the
    pooled state. Without a key projection: q . (W h + b) is (W^T q) . h plus a constant that the
    softmax ignores."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.queries = nn.Parameter(torch.randn(len(ATTRIBUTES), hidden_size) * 0.02)
        self.heads = nn.ModuleList(nn.Linear(hidden_size, len(ATTRIBUTE_VALUES[a])) for a in ATTRIBUTES)

    def forward(self, states: torch.Tensor) -> list[torch.Tensor]:
        """Logits per attribute, for (layer-normalized) states (batch, tokens, hidden_size)."""
        weights = torch.einsum("ad,btd->bat", self.queries, states).softmax(-1)
        pooled = torch.einsum("bat,btd->bad", weights, states)
        return [head(pooled[:, i]) for i, head in enumerate(self.heads)]


def caption_states(language_model: LanguageModel, specs: list[ShapeSpec],
                   phrasings: tuple[str, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """The states the bridge would receive for every (triple, phrasing) caption, and the triples'
    attribute indices (captions, 3)."""
    pairs = [(spec, phrasing) for spec in specs for phrasing in phrasings]
    input_ids, attention_mask = language_model.tokenize([s.caption(p) for s, p in pairs], torch.device("cpu"))
    with torch.no_grad():
        states = language_model(input_ids, attention_mask).float()
    labels = torch.tensor([[ATTRIBUTE_VALUES[a].index(getattr(s, a)) for a in ATTRIBUTES] for s, _ in pairs])
    return states, labels


def fit_readout(train: tuple[torch.Tensor, torch.Tensor], seed: int = 0,
                steps: int = READOUT_STEPS) -> AttributeReadout:
    """A readout fit on ``train`` (states, attribute indices) from the ``seed``-th initialisation."""
    states, labels = _normalized(train[0]), train[1]
    torch.manual_seed(seed)
    readout = AttributeReadout(states.shape[-1])
    optimizer = torch.optim.AdamW(readout.parameters(), lr=3e-3, weight_decay=0.01)
    for _ in range(steps):
        logits = readout(states)
        loss = sum(nn.functional.cross_entropy(logit, labels[:, i]) for i, logit in enumerate(logits))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return readout


def readout_accuracy(readout: AttributeReadout, test: tuple[torch.Tensor, torch.Tensor]) -> dict[str, float]:
    """Accuracy per attribute and on all three of ``readout`` on ``test`` (states, attribute indices)."""
    with torch.no_grad():
        logits = readout(_normalized(test[0]))
    correct = torch.stack([logit.argmax(-1) for logit in logits], 1) == test[1]
    return {**{a: correct[:, i].float().mean().item() for i, a in enumerate(ATTRIBUTES)},
            "all": correct.all(1).float().mean().item()}


def _normalized(states: torch.Tensor) -> torch.Tensor:
    """``states`` layer-normalized over the hidden size (no learned scale): one scale for every
    layer and model."""
    return nn.functional.layer_norm(states, states.shape[-1:])


def probe_language_model(language_model: LanguageModel, seeds: int = 3) -> dict[str, dict[str, float]]:
    """Readout accuracies, averaged over ``seeds`` readouts (and the range of "all" over them):
    ``new_phrasing`` (every training triple in every held-out phrasing), ``new_combination``
    (every held-out triple in every training phrasing), and ``leave_one_phrasing_out`` (training
    captions only; one readout per left-out phrasing, of the first seed)."""
    train = train_specs()
    fit = caption_states(language_model, train, TRAIN_PHRASINGS)
    tests = {"new_phrasing": caption_states(language_model, train, HELDOUT_PHRASINGS),
             "new_combination": caption_states(language_model, heldout_specs(), TRAIN_PHRASINGS)}
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in [*tests, "leave_one_phrasing_out"]}
    for seed in range(seeds):
        readout = fit_readout(fit, seed)  # one fit, tested on both held-out sets
        for name, test in tests.items():
            runs[name].append(readout_accuracy(readout, test))
    for held in TRAIN_PHRASINGS:
        rest = tuple(p for p in TRAIN_PHRASINGS if p != held)
        runs["leave_one_phrasing_out"].append(readout_accuracy(
            fit_readout(caption_states(language_model, train, rest)), caption_states(language_model, train, (held,))))
    return {name: {**{score: sum(r[score] for r in results) / len(results) for score in results[0]},
                   "all_min": min(r["all"] for r in results), "all_max": max(r["all"] for r in results)}
            for name, results in runs.items()}
