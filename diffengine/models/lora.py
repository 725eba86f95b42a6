"""LoRA injection the LaVi-Bridge way: every Linear/Conv2d inside modules of the named classes."""
from collections.abc import Iterable

from peft import LoraConfig, inject_adapter_in_model
from torch import nn

LORA_LAYER_TYPES = (nn.Linear, nn.Conv2d)


def lora_target_names(model: nn.Module, target_classes: Iterable[str]) -> list[str]:
    """Full names of the Linear/Conv2d layers inside modules whose class name is in ``target_classes``.

    This is the rule of the paper's ``inject_trainable_lora_extended``: walk ``model.modules()``,
    and for each module of a target class take every Linear/Conv2d it contains, in order.
    """
    target_classes = set(target_classes)
    names: list[str] = []
    seen: set[str] = set()
    for parent_name, module in model.named_modules():
        if type(module).__name__ not in target_classes:
            continue
        for child_name, child in module.named_modules():
            if not child_name or not isinstance(child, LORA_LAYER_TYPES):
                continue
            full_name = f"{parent_name}.{child_name}" if parent_name else child_name
            if full_name not in seen:
                seen.add(full_name)
                names.append(full_name)
    return names


def inject_lora(model: nn.Module, target_classes: Iterable[str], rank: int, alpha: float | None = None,
                dropout: float = 0.0) -> LoraConfig:
    """Inject peft LoRA into ``model`` in place on the paper's module set; returns the LoraConfig used."""
    target_classes = sorted(set(target_classes))
    targets = lora_target_names(model, target_classes)
    if not targets:
        raise ValueError(
            f"No Linear/Conv2d layer found inside modules of classes {target_classes} in "
            f"{type(model).__name__}: this model family has no LoRA target set that matches it.")
    config = LoraConfig(r=rank, lora_alpha=rank if alpha is None else alpha,
                        lora_dropout=dropout, target_modules=targets)
    inject_adapter_in_model(config, model)
    return config
