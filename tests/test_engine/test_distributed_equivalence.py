"""Data parallelism changes nothing but speed: 2 gloo ranks x batch b update the LoRA and adapter
weights as 1 rank x batch 2b does on the same samples, with and without gradient accumulation,
and the micro-steps before an accumulated update skip DDP's all-reduce.

The real training path runs: a ``LaViBridge`` (here with per-sample random draws, see
``KeyedDrawsBridge``), ``ParamGroupsOptimWrapperConstructor`` -> ``GuardedOptimWrapper`` (SGD:
its step is proportional to the gradient, so a gradient off by a factor shows; Adam's first step
would not), and ``train_step`` of the model, or of ``DeviceAgnosticDDP`` around it in 2 spawned
processes. Each setup makes one optimizer step from the same (perturbed) bridge weights.
"""
import itertools
import json
import shutil
import time
from dataclasses import fields
from datetime import timedelta
from pathlib import Path
from unittest import mock

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from mmengine.logging import MessageHub
from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

from diffengine.engine import DeviceAgnosticDDP, GuardedOptimWrapper, ParamGroupsOptimWrapperConstructor
from diffengine.models import LaViBridge
from diffengine.models.editors.lavi_bridge import lavi_bridge as lavi_bridge_module
from diffengine.models.losses import NoisedLatents
from diffengine.models.vision import batch_latents

pytestmark = pytest.mark.slow

CAPTIONS = ("a red circle on a white background", "a blue square on a black background",
            "a green triangle on a white background", "a yellow star on a black background")
KEYS = [str(index) for index in range(len(CAPTIONS))]  # 2b = 4 samples: b = 2 per rank
# different rates per group: each group's rate must reach its parameters in every setup
GROUP_LR = {"vision_lora": 1.0, "text_lora": 10.0, "adapter": 5.0}
_hubs = itertools.count()


def _seeded(seed: int, function, *args):
    """``function(*args)`` with the global generator seeded by ``seed`` (its state restored after)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return function(*args)


class KeyedDrawsBridge(LaViBridge):
    """``LaViBridge`` whose random draws for a sample depend on its key alone (test only).

    Training draws a latent from the VAE's distribution, the noise and the timestep for a whole
    batch from the global generator, so a sample gets other draws when the batch is split over
    ranks or micro-batches. Here the production functions (``batch_latents``, the objective's ``noised``) run
    on each sample alone, with the generator seeded by its key; the rest of ``forward`` is as is.
    """

    def forward(self, inputs: dict, data_samples: dict | None = None, mode: str = "loss") -> dict:
        self._seeds = [int(key) for key in data_samples["keys"]]

        def keyed_batch_latents(vae, batch):
            return torch.cat([_seeded(2 * seed, batch_latents, vae, {"pixel_values": batch["pixel_values"][i:i + 1]})
                              for i, seed in enumerate(self._seeds)])

        noised = self.objective.noised

        def keyed_noised(latents):
            draws = [_seeded(2 * seed + 1, noised, latents[i:i + 1]) for i, seed in enumerate(self._seeds)]
            parts = ([getattr(draw, field.name) for draw in draws] for field in fields(NoisedLatents))
            return NoisedLatents(*(None if part[0] is None else torch.cat(part) for part in parts))

        with mock.patch.object(lavi_bridge_module, "batch_latents", keyed_batch_latents), \
                mock.patch.object(self.objective, "noised", keyed_noised):
            return super().forward(inputs, data_samples, mode)


def _t5_without_dropout(tiny_t5: str, folder: Path) -> str:
    """A copy of the tiny T5 with ``dropout_rate`` 0 (T5's 0.1 is on in train mode, as in the paper's training)."""
    shutil.copytree(tiny_t5, folder)
    config = json.loads((folder / "config.json").read_text())
    config["dropout_rate"] = 0.0
    (folder / "config.json").write_text(json.dumps(config))
    return str(folder)


def _build(t5: str, tiny_sd: str, init: Path | None = None) -> KeyedDrawsBridge:
    """The tiny bridge with every dropout off (a per-batch random draw too), in train mode as the runner sets it."""
    model = KeyedDrawsBridge(t5, tiny_sd, max_length=16, adapter=dict(dropout=0.0),
                             text_lora=dict(rank=4, dropout=0.0), vision_lora=dict(rank=4, dropout=0.0))
    if init is not None:
        model.load_state_dict(torch.load(init, weights_only=True), strict=True)
    return model.train()


def _optim_wrapper(model, accumulative_counts: int) -> GuardedOptimWrapper:
    MessageHub.get_instance(f"distributed_equivalence_{next(_hubs)}")  # a fresh hub, made current
    wrapper = ParamGroupsOptimWrapperConstructor(
        dict(type=GuardedOptimWrapper, optimizer=dict(type=torch.optim.SGD, lr=1.0),
             accumulative_counts=accumulative_counts), dict(group_lr=GROUP_LR))(model)
    assert type(wrapper) is GuardedOptimWrapper
    assert {group["name"]: group["lr"] for group in wrapper.optimizer.param_groups} == GROUP_LR
    return wrapper


def _batch(keys: list[str]) -> dict:
    """The samples ``keys`` as a loader ships them: uint8 pixels (the same per key everywhere), captions, keys."""
    pixels = torch.randint(0, 256, (len(KEYS), 3, 32, 32), generator=torch.Generator().manual_seed(0),
                           dtype=torch.uint8)
    index = [KEYS.index(key) for key in keys]
    return {"inputs": {"pixel_values": pixels[index], "text": [CAPTIONS[i] for i in index]},
            "data_samples": {"keys": list(keys)}}


def _group_names(model) -> dict[str, list[str]]:
    names = {id(p): name for name, p in model.named_parameters()}
    return {group: [names[id(p)] for p in parameters] for group, parameters in model.parameter_groups().items()}


def _parameters(model) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def _single_rank(t5: str, tiny_sd: str, init: Path, micro_batches: list[list[str]]) -> dict:
    """One optimizer step of ``model.train_step`` over ``micro_batches`` (accumulated if more than one)."""
    model = _build(t5, tiny_sd, init)
    optim_wrapper = _optim_wrapper(model, len(micro_batches))
    for keys in micro_batches:
        model.train_step(_batch(keys), optim_wrapper)
    return _parameters(model)


def _counting_allreduce(calls: list[int], bucket):
    """DDP's default gradient hook (average over the default group's ranks), counting the buckets it all-reduces."""
    calls[0] += 1
    return allreduce_hook(None, bucket)


def _rank_worker(rank: int, t5: str, tiny_sd: str, init: Path, out: Path, store: Path) -> None:
    """2-rank setups: the step of ``DeviceAgnosticDDP.train_step`` on this rank's half of ``KEYS``,
    in 1 batch of b, then in 2 micro-batches of b/2 accumulated. Saves the parameters and, per
    micro-step, the all-reduced buckets and ``no_sync`` entries."""
    torch.set_num_threads(1)  # 2 ranks on 2 cores
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2,
                            timeout=timedelta(seconds=120))
    try:
        half = KEYS[2 * rank:2 * rank + 2]
        for name, micro_batches in (("ddp", [half]), ("ddp_accumulated", [[key] for key in half])):
            model = _build(t5, tiny_sd, init)
            # the runner's wrap_model passes device_ids=[LOCAL_RANK]; DeviceAgnosticDDP drops them on CPU
            ddp = DeviceAgnosticDDP(module=model, device_ids=[rank], broadcast_buffers=False)
            all_reduces, no_syncs = [0], [0]
            ddp.register_comm_hook(all_reduces, _counting_allreduce)
            no_sync = ddp.no_sync

            def counting_no_sync(no_sync=no_sync, no_syncs=no_syncs):
                no_syncs[0] += 1
                return no_sync()

            ddp.no_sync = counting_no_sync  # what MMEngine's optim_context looks up
            optim_wrapper = _optim_wrapper(ddp, len(micro_batches))
            steps = []
            for keys in micro_batches:
                counts = all_reduces[0], no_syncs[0]
                ddp.train_step(_batch(keys), optim_wrapper)
                steps.append({"all_reduces": all_reduces[0] - counts[0], "no_sync": no_syncs[0] - counts[1]})
            torch.save({"parameters": _parameters(model), "steps": steps}, out / f"{name}_rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _join(workers: mp.ProcessContext, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    try:
        while not workers.join(timeout=5):  # raises ProcessRaisedException with a worker's traceback
            if time.monotonic() > deadline:
                raise TimeoutError(f"2-rank training did not finish in {seconds} s")
    finally:
        for process in workers.processes:
            if process.is_alive():
                process.kill()


@pytest.fixture(scope="module")
def updates(tiny_t5, tiny_sd, tmp_path_factory) -> dict[str, dict]:
    """Parameters before (``init``) and after one step of every setup; the 2-rank ones per rank."""
    folder = tmp_path_factory.mktemp("distributed_equivalence")
    t5 = _t5_without_dropout(tiny_t5, folder / "t5")
    model = _build(t5, tiny_sd)
    # LoRA B starts at zero, so LoRA A would get no gradient: perturb every trainable weight
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.05)
    init = folder / "init.pt"
    torch.save(model.state_dict(), init)  # the trainable weights only
    results = {"init": _parameters(model), "groups": _group_names(model)}
    del model
    workers = mp.start_processes(_rank_worker, args=(t5, tiny_sd, init, folder, folder / "store"),
                                 nprocs=2, join=False, start_method="spawn")
    try:  # the 1-rank setups while the ranks start
        results["one_rank"] = _single_rank(t5, tiny_sd, init, [KEYS])
        results["one_rank_accumulated"] = _single_rank(t5, tiny_sd, init, [KEYS[:2], KEYS[2:]])
    finally:
        _join(workers, seconds=300)
    for name, rank in itertools.product(("ddp", "ddp_accumulated"), range(2)):
        results[f"{name}_rank{rank}"] = torch.load(folder / f"{name}_rank{rank}.pt", weights_only=True)
    return results


def _assert_same_update(parameters: dict[str, torch.Tensor], updates: dict) -> None:
    """The (visible) update of ``updates["one_rank"]`` to every LoRA and adapter tensor; frozen ones untouched."""
    reference, init, groups = updates["one_rank"], updates["init"], updates["groups"]
    assert parameters.keys() == reference.keys() == init.keys()
    trainable = {name for names in groups.values() for name in names}
    for name in init.keys() - trainable:
        assert torch.equal(parameters[name], init[name]), f"frozen {name} changed"
    for group, names in groups.items():
        update = {name: parameters[name] - init[name] for name in names}
        expected = {name: reference[name] - init[name] for name in names}
        for name in names:
            assert expected[name].abs().max() > 0, f"{name} did not move"
            scale = float(expected[name].abs().max())
            torch.testing.assert_close(update[name], expected[name], rtol=1e-3, atol=1e-3 * scale,
                                       msg=lambda message, name=name: f"{name}: {message}")
        update, expected = (torch.cat([tensor.flatten() for tensor in part.values()]) for part in (update, expected))
        weights = torch.cat([init[name].flatten() for name in names])
        assert expected.norm() > 1e-3 * weights.norm(), f"{group} barely moved"
        assert (update - expected).norm() < 1e-4 * expected.norm(), group


def test_two_ranks_update_as_one_rank_with_the_double_batch(updates):
    # 2 ranks x batch 2 == 1 rank x batch 4
    _assert_same_update(updates["ddp_rank0"]["parameters"], updates)
    # and the ranks stay identical
    for name, p in updates["ddp_rank0"]["parameters"].items():
        assert torch.equal(p, updates["ddp_rank1"]["parameters"][name]), name


def test_accumulated_micro_batches_update_as_the_full_batch(updates):
    # 1 rank x 2 micro-batches of 2 (accumulative_counts=2) == 1 rank x batch 4
    _assert_same_update(updates["one_rank_accumulated"], updates)
    # 2 ranks x 2 micro-batches of 1 == 1 rank x batch 4
    _assert_same_update(updates["ddp_accumulated_rank0"]["parameters"], updates)
    for name, p in updates["ddp_accumulated_rank0"]["parameters"].items():
        assert torch.equal(p, updates["ddp_accumulated_rank1"]["parameters"][name]), name


def test_only_the_final_micro_step_all_reduces(updates):
    for rank in range(2):
        # without accumulation every step syncs: the hook sees the gradient buckets
        (step,) = updates[f"ddp_rank{rank}"]["steps"]
        assert step["no_sync"] == 0 and step["all_reduces"] > 0
        # with accumulative_counts=2, MMEngine's optim_context enters DDP's no_sync for the first
        # micro-step (no all-reduce: the gradient stays local) and syncs all buckets at the second
        first, final = updates[f"ddp_accumulated_rank{rank}"]["steps"]
        assert first == {"all_reduces": 0, "no_sync": 1}
        assert final == {"all_reduces": step["all_reduces"], "no_sync": 0}
