"""The building block for language models too large to copy per GPU, as far as a CPU tests it.

PyTorch's FSDP2 (``torch.distributed.fsdp.fully_shard``) shards the frozen LM that this project
loads (``FrozenLanguageModel``) with the LoRA it injects (``inject_lora``), per decoder layer (the
model's ``_no_split_modules``): 2 gloo ranks each hold half of the LM's weights, and give the
hidden states and LoRA gradients of the unsharded model on the whole batch. Training does not use
it yet (README, "Language models too large for one GPU" says what is missing).
"""
import time
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.distributed.fsdp import fully_shard

from diffengine.models.language import FrozenLanguageModel
from diffengine.models.lora import inject_lora

pytestmark = pytest.mark.slow

PROMPTS = ["a red circle", "a blue square on black", "green", "a yellow triangle on a white background"]


def _lm(path: str) -> FrozenLanguageModel:
    torch.manual_seed(0)
    language = FrozenLanguageModel(path, max_length=12)
    inject_lora(language.model, language.family.lora_target_classes, rank=4, alpha=4, dropout=0.0)
    with torch.no_grad():  # LoRA B starts at zero, which would leave LoRA A without a gradient
        for p in language.model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.1)
    return language


def _hidden_and_grads(language: FrozenLanguageModel, prompts: list[str], full: bool) -> dict:
    hidden = language(*language.tokenize(prompts, torch.device("cpu")))
    hidden.square().mean().backward()
    grads = {name: (p.grad.full_tensor() if full else p.grad)
             for name, p in language.model.named_parameters() if p.requires_grad}
    return {"hidden": hidden.detach(), "grads": grads}


def _rank_worker(rank: int, path: str, store: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2,
                            timeout=timedelta(seconds=120))
    try:
        language = _lm(path)
        layers = set(language.model._no_split_modules)
        for module in language.model.modules():
            if type(module).__name__ in layers:
                fully_shard(module)
        fully_shard(language.model)
        local = sum(p.to_local().numel() for p in language.model.parameters())
        result = _hidden_and_grads(language, PROMPTS[2 * rank:2 * rank + 2], full=True)
        torch.save({**result, "local_parameters": local}, f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_a_frozen_lm_with_lora_sharded_over_two_ranks_computes_what_the_whole_one_does(tiny_llama, tmp_path):
    workers = mp.start_processes(_rank_worker, args=(tiny_llama, str(tmp_path / "store"), str(tmp_path)),
                                 nprocs=2, join=False, start_method="spawn")
    whole = _lm(tiny_llama)
    expected = _hidden_and_grads(whole, PROMPTS, full=False)
    deadline = time.monotonic() + 240
    while not workers.join(timeout=5):
        assert time.monotonic() < deadline, "the 2 ranks did not finish in 240 s"
    ranks = [torch.load(tmp_path / f"rank{rank}.pt", weights_only=True) for rank in (0, 1)]
    torch.testing.assert_close(torch.cat([r["hidden"] for r in ranks]), expected["hidden"], atol=1e-5, rtol=1e-4)
    for rank in ranks:  # each rank's batch is half the whole one: FSDP averages the two
        assert rank["grads"].keys() == expected["grads"].keys() and expected["grads"]
        for name, grad in rank["grads"].items():
            torch.testing.assert_close(grad, expected["grads"][name], atol=1e-6, rtol=1e-4)
    whole_count = sum(p.numel() for p in whole.model.parameters())
    assert all(r["local_parameters"] <= whole_count // 2 + 64 for r in ranks)
