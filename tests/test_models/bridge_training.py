"""Shared by the family tests: a fixed batch and a short training run with comparable losses."""
import torch
from mmengine.optim import OptimWrapper
from torch.optim import AdamW

from diffengine.engine import ParamGroupsOptimWrapperConstructor
from diffengine.models import LaViBridge

BATCH = {"pixel_values": torch.linspace(-1, 1, 2 * 3 * 32 * 32).reshape(2, 3, 32, 32),
         "text": ["a red circle on a white background", "a blue square on a black background"]}


def seeded_loss(model: LaViBridge, seed: int = 7) -> float:
    """Loss on ``BATCH`` with fixed noise and timesteps, so two evaluations are comparable."""
    torch.manual_seed(seed)
    with torch.no_grad():
        return model(BATCH)["loss"].item()


def train_briefly(model: LaViBridge, steps: int = 15, lr: float = 2e-3) -> tuple[float, float]:
    """``steps`` AdamW updates on ``BATCH``; returns the seeded loss before and after."""
    optim = ParamGroupsOptimWrapperConstructor(
        dict(type=OptimWrapper, optimizer=dict(type=AdamW, lr=lr)), {})(model)
    before = seeded_loss(model)
    torch.manual_seed(0)
    for _ in range(steps):
        optim.update_params(model(BATCH)["loss"])
    return before, seeded_loss(model)
