"""Language models too large to copy per GPU, as far as a CPU tests it.

PyTorch's FSDP2 (``torch.distributed.fsdp.fully_shard``) shards the frozen LM that this project
loads (``LanguageModel``) with the LoRA it injects (``inject_lora``), per decoder layer (the
model's ``_no_split_modules``): 2 gloo ranks each hold half of the LM's weights, and give the
hidden states and LoRA gradients of the unsharded model on the whole batch. Training uses it for
a frozen LM (``ShardedLanguageModelDDP``, text LoRA rank 0): the real ``wds_train`` on 2 ranks,
hooks sampling and scoring on both, stopped at a checkpoint and resumed, ends with the bridge of
plain DDP, bit for bit.
"""
import os
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.distributed.fsdp import fully_shard

from diffengine.engine import ShardedLanguageModelDDP
from diffengine.models import LaViBridge
from diffengine.models.language import LanguageModel
from diffengine.models.lora import inject_lora
from tests.helpers import demo_cfg_options

pytestmark = pytest.mark.slow

PROMPTS = ["a red circle", "a blue square on black", "green", "a yellow triangle on a white background"]


def _lm(path: str) -> LanguageModel:
    torch.manual_seed(0)
    language = LanguageModel(path, max_length=12)
    inject_lora(language.model, language.family.lora_target_classes, rank=4, alpha=4, dropout=0.0)
    with torch.no_grad():  # LoRA B starts at zero, which would leave LoRA A without a gradient
        for p in language.model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.1)
    return language


def _hidden_and_grads(language: LanguageModel, prompts: list[str], full: bool) -> dict:
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


def _train_on_two_ranks(work_dir: Path, options: list[str], *flags: str) -> None:
    """``NPROC_PER_NODE=2 diffengine wds_train lavi_bridge_demo`` with ``options``; asserts it ends well."""
    env = {**os.environ, "NPROC_PER_NODE": "2", "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "diffengine", "wds_train", "lavi_bridge_demo", "--work-dir",
                             str(work_dir), *flags, "--cfg-options", *options], env=env, capture_output=True,
                            text=True, timeout=240, cwd=Path(__file__).parents[2])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def test_training_with_the_lm_sharded_equals_plain_ddp(tiny_llama, tiny_sd, demo_shards, tmp_path):
    # a frozen decoder LM (text LoRA rank 0); the sample grid every 2 iterations and the ShapesBench
    # scores before and after run a sharded forward on both ranks
    options = [*demo_cfg_options(tiny_llama, tiny_sd, demo_shards, max_iters=4, checkpoint_interval=2),
               "model.text_lora.rank=0", "model.adapter=None", "custom_hooks.3.interval=2"]
    sharded_options = [*options, "model_wrapper_cfg.type=diffengine.ShardedLanguageModelDDP"]
    _train_on_two_ranks(tmp_path / "ddp", options)
    # sharded, stopped at iteration 2 and resumed: the sharded wrapper's checkpoint holds the
    # whole run's state too (one run fewer than an uninterrupted sharded one beside it)
    _train_on_two_ranks(tmp_path / "sharded", [*sharded_options, "train_cfg.max_iters=2"])
    _train_on_two_ranks(tmp_path / "sharded", sharded_options, "--resume")
    for run in ("sharded", "ddp"):
        assert sorted(p.name for p in (tmp_path / run / "samples").glob("*.png")) == [
            "iter_0.png", "iter_2.png", "iter_4.png"]
    sharded, ddp = (LaViBridge.from_bridge(tmp_path / run / "bridge" / "iter_4") for run in ("sharded", "ddp"))
    trainable = [n for n, p in sharded.named_parameters() if p.requires_grad]  # vision LoRA and adapter
    assert trainable and all(torch.equal(sharded.get_parameter(n), ddp.get_parameter(n)) for n in trainable)
    earlier = LaViBridge.from_bridge(tmp_path / "sharded" / "bridge" / "iter_2")
    assert not all(torch.equal(earlier.get_parameter(n), sharded.get_parameter(n)) for n in trainable)


def test_a_sharded_lm_must_be_frozen(tiny_llama, tiny_sd):
    with pytest.raises(ValueError, match="shards a frozen language model, and this one trains .* set "
                                         "model.text_lora.rank=0") as error:
        ShardedLanguageModelDDP(LaViBridge(tiny_llama, tiny_sd, max_length=16))
    assert "\n" not in str(error.value)
