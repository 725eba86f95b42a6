"""The language-model readout: it reads the attributes from states that carry them, and no more."""
import torch

from diffengine.datasets.shapes import HELDOUT_PHRASINGS, TRAIN_PHRASINGS, train_specs
from diffengine.evaluation.language_probe import caption_states, fit_readout, probe_language_model, readout_accuracy
from diffengine.models.language import LanguageModel


def test_token_embeddings_give_every_attribute_and_blank_states_give_chance(tiny_llama):
    # a Llama's layer 0 is the embedding of each word, without position (RoPE acts in attention):
    # the world's triples are read from the words alone (the background palette shares only blue
    # with the foreground's), so every set is read
    embeddings = LanguageModel(tiny_llama, max_length=16, hidden_layer=0).eval()
    result = probe_language_model(embeddings, seeds=1)
    assert min(result[name]["all"] for name in ("new_phrasing", "new_combination")) >= 0.95, result
    assert result["leave_one_phrasing_out"]["all"] >= 0.9, result
    # negative control: the same readout on states without the caption (zeros) sits at chance
    train, test = (caption_states(embeddings, train_specs(), TRAIN_PHRASINGS),
                   caption_states(embeddings, train_specs(), HELDOUT_PHRASINGS))
    blank = readout_accuracy(fit_readout((torch.zeros_like(train[0]), train[1])),
                             (torch.zeros_like(test[0]), test[1]))
    assert blank["color"] <= 0.35 and blank["shape"] <= 0.35 and blank["all"] <= 0.1, blank

