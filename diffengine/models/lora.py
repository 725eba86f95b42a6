"""LoRA the LaVi-Bridge way (every Linear/Conv2d inside modules of the named classes) and its files.

A LoRA folder is peft's adapter format: ``adapter_config.json`` + ``adapter_model.safetensors``
(float32). Bridges (``text_lora/``, ``vision_lora/``) and exported pipelines (``unet_lora/``, ...)
both use it, through ``save_lora`` / ``load_lora_weights`` / ``load_lora``.
"""
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from peft import LoraConfig, inject_adapter_in_model
from peft.functional import cast_adapter_dtype, get_peft_model_state_dict, set_peft_model_state_dict
from peft.tuners.tuners_utils import BaseTunerLayer
from peft.utils import SAFETENSORS_WEIGHTS_NAME as LORA_WEIGHTS
from safetensors.torch import save_file
from torch import nn

from .weights_file import load_checked_safetensors

LORA_LAYER_TYPES = (nn.Linear, nn.Conv2d)
ADAPTER_NAME = "default"  # the name inject_adapter_in_model gives a LoRA


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


def update_rank_limit(layer: nn.Module) -> int:
    """The highest rank a LoRA update of a Linear/Conv2d layer can have: min(inputs, outputs)."""
    if isinstance(layer, nn.Conv2d):
        inputs = layer.in_channels // layer.groups * layer.kernel_size[0] * layer.kernel_size[1]
        return min(inputs, layer.out_channels)
    return min(layer.in_features, layer.out_features)


def lora_layers(model: nn.Module) -> list[tuple[str, BaseTunerLayer]]:
    """The peft LoRA layers of ``model`` with their module names."""
    return [(name, module) for name, module in model.named_modules() if isinstance(module, BaseTunerLayer)]


def set_lora_input_casting(layers: Iterable[BaseTunerLayer], enabled: bool) -> None:
    """Whether peft casts each LoRA layer's input to the dtype of its (float32) weights.

    Under autocast the cast is two copies of the activation for nothing: the LoRA matmuls cast
    it straight back to the autocast dtype. Without autocast it is needed where the frozen
    weights are in bfloat16 or float16.
    """
    for layer in layers:
        layer.cast_input_dtype_enabled = enabled


@contextmanager
def base_layers_only(model: nn.Module) -> Iterator[nn.Module]:
    """Temporarily put every LoRA layer's base layer back in its place (to save the base model)."""
    layers = lora_layers(model)
    for name, layer in layers:
        model.set_submodule(name, layer.get_base_layer())
    try:
        yield model
    finally:
        for name, layer in layers:
            model.set_submodule(name, layer)


def merge_lora_layers(model: nn.Module) -> nn.Module:
    """Fold every LoRA layer into its base layer and unwrap it, in place; returns the plain model.

    peft's ``merge_and_unload`` lives on ``LoraModel``/``PeftModel`` wrappers, which models given
    LoRA with ``inject_adapter_in_model`` do not have; this is its per-layer equivalent.
    """
    for name, layer in lora_layers(model):
        layer.merge()
        model.set_submodule(name, layer.get_base_layer())
    # inject_adapter_in_model leaves its config on the model; a plain model must not claim a LoRA
    if hasattr(model, "peft_config"):
        del model.peft_config
    return model


def save_lora(model: nn.Module, directory: str | Path) -> Path:
    """Write ``model``'s LoRA as a peft adapter folder (config + float32 safetensors); returns it."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model.peft_config[ADAPTER_NAME].save_pretrained(directory)
    state = {k: v.detach().to("cpu", torch.float32).contiguous()
             for k, v in get_peft_model_state_dict(model, adapter_name=ADAPTER_NAME).items()}
    save_file(state, directory / LORA_WEIGHTS)
    return directory


def load_lora_weights(model: nn.Module, directory: str | Path) -> None:
    """Load a LoRA folder's weights into the LoRA layers ``model`` already has; a clear error if they differ."""
    directory = Path(directory)
    result = set_peft_model_state_dict(model, load_checked_safetensors(directory / LORA_WEIGHTS),
                                       adapter_name=ADAPTER_NAME)
    missing = [k for k in result.missing_keys if "lora_" in k]
    if missing or result.unexpected_keys:
        example = (missing or result.unexpected_keys)[0]
        raise ValueError(f"{directory} does not match this model's LoRA layers: {len(missing)} missing, "
                         f"{len(result.unexpected_keys)} unexpected tensors, e.g. {example}")


def load_lora(model: nn.Module, directory: str | Path) -> nn.Module:
    """Inject the LoRA of a folder (``save_lora``'s format) into ``model`` and load it; returns it in eval mode."""
    directory = Path(directory)
    inject_adapter_in_model(LoraConfig.from_pretrained(directory), model, adapter_name=ADAPTER_NAME)
    # LoRA trains in float32 on low-precision base weights: run it that way, and upcast before
    # loading so the saved float32 values are not rounded
    cast_adapter_dtype(model, ADAPTER_NAME)
    load_lora_weights(model, directory)
    # the new dropout layers start in training mode
    return model.eval()
