"""Convert the LaVi-Bridge authors' released checkpoints into this project's bridge folders.

A release folder holds ``lora_text.pt`` and ``lora_vis.pt``, each a ``torch.save``d list
``[up_0, down_0, up_1, down_1, ...]`` of fp16 tensors, and ``adapter/``, a diffusers folder of the
text adapter. The pairs follow the walk of the authors' ``modules/lora.py``: every module whose
class name is in the target set, in ``model.modules()`` order, then every ``nn.Linear`` /
``nn.Conv2d`` in that module's ``named_modules()``. Their layers compute ``base(x) + up(down(x))``
(scale 1; a conv's ``down`` has the conv's kernel, stride and padding, its ``up`` is 1x1), which is
peft's LoRA with ``lora_A = down``, ``lora_B = up`` and ``lora_alpha = r``.
"""
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from peft.tuners.lora import LoraLayer
from torch import nn
from transformers import AutoConfig

from diffengine.constants import BRIDGE_MANIFEST
from diffengine.file_writes import filled_folder
from diffengine.models.weights_file import load_local_checkpoint
from diffengine.precision import TORCH_DTYPES

from ...vision import find_vision_family
from .lavi_bridge import LaViBridge
from .text_adapter import LaViBridgeTextAdapter

TEXT_LORA_FILE = "lora_text.pt"
VISION_LORA_FILE = "lora_vis.pt"
ADAPTER_DIR = "adapter"
# the adapter's constructor arguments; the authors' config.json holds the first three only
ADAPTER_ARGS = ("in_dim", "int_dim", "out_dim", "mult", "dropout")
# the paper's training dropout: only matters if the converted bridge is trained further
OFFICIAL_LORA_DROPOUT = 0.1


@dataclass(frozen=True)
class OfficialCombo:
    """The base models one released checkpoint was trained on (hub ids, their kinds) and how it read the LM."""

    text_encoder: str
    vision_model: str
    # what local copies given instead must be: the LM's config model_type, the denoiser's subfolder
    language_model_type: str
    denoiser_subfolder: str
    # LaViBridge arguments of the authors' training script, recorded in the bridge manifest
    options: dict = field(default_factory=dict)


OFFICIAL_COMBOS: dict[str, OfficialCombo] = {
    "t5_unet": OfficialCombo("google-t5/t5-large", "CompVis/stable-diffusion-v1-4", "t5", "unet"),
    # their pad token '[PAD]' is not in Llama's vocabulary: their slow tokenizer encodes it as
    # <unk> (id 0)
    "llama2_unet": OfficialCombo("meta-llama/Llama-2-7b-hf", "CompVis/stable-diffusion-v1-4", "llama", "unet",
                                 dict(pad_token="<unk>")),
    "t5_transformer": OfficialCombo("google-t5/t5-large", "PixArt-alpha/PixArt-XL-2-512x512", "t5",
                                    "transformer", dict(max_length=120, text_attention_mask=True)),
}


def official_lora_layers(model: nn.Module, target_classes: Iterable[str]) -> list[str]:
    """Names of the peft LoRA layers of ``model`` in the authors' save order, repeats included.

    The authors' walk visits a layer once per target-class ancestor, so a layer inside two nested
    target modules is saved twice (the same tensors both times, and their loader keeps the last
    pair); ``lora_target_names`` lists it once. No released combo nests target modules, so there
    both orders are the same.
    """
    target_classes = set(target_classes)
    names: list[str] = []
    for parent_name, parent in model.named_modules():
        if type(parent).__name__ not in target_classes:
            continue
        for child_name, child in parent.named_modules():
            # a peft layer stands where the authors' walk found the original Linear/Conv2d
            if child_name and isinstance(child, LoraLayer):
                names.append(f"{parent_name}.{child_name}" if parent_name else child_name)
    return names


def convert_official_checkpoint(ckpt_dir: str | Path, combo: str, out_bridge_dir: str | Path,
                                text_encoder: str | None = None, vision_model: str | None = None,
                                *, weight_dtype: str = "float32") -> Path:
    """Convert an authors' release folder (LoRA lists + ``adapter/``) into a bridge folder.

    ``text_encoder``/``vision_model`` replace the combo's hub ids (e.g. local copies); they are
    recorded in the bridge manifest. ``weight_dtype`` is the dtype the frozen base models are
    loaded in while converting (``bfloat16`` halves the memory for Llama-2-7B) and is recorded too.
    """
    if combo not in OFFICIAL_COMBOS:
        raise ValueError(f"Unknown official combo '{combo}'; supported: {', '.join(OFFICIAL_COMBOS)}")
    if weight_dtype not in TORCH_DTYPES:
        raise ValueError(f"weight_dtype must be one of {sorted(TORCH_DTYPES)}, got '{weight_dtype}'")
    ckpt_dir = Path(ckpt_dir)
    for required in (TEXT_LORA_FILE, VISION_LORA_FILE, f"{ADAPTER_DIR}/config.json"):
        if not (ckpt_dir / required).is_file():
            raise FileNotFoundError(f"{ckpt_dir / required} not found: an official LaVi-Bridge "
                                    f"checkpoint folder holds {TEXT_LORA_FILE}, {VISION_LORA_FILE} "
                                    f"and {ADAPTER_DIR}/")
    # cheap checks first: the base models take minutes to load at full size
    text_tensors = _load_lora_list(ckpt_dir / TEXT_LORA_FILE)
    vision_tensors = _load_lora_list(ckpt_dir / VISION_LORA_FILE)
    try:
        adapter = LaViBridgeTextAdapter.from_pretrained(ckpt_dir / ADAPTER_DIR)
    except (OSError, ValueError, RuntimeError) as error:
        raise ValueError(f"{ckpt_dir / ADAPTER_DIR} is not a readable adapter folder: {error}") from None

    text_encoder = text_encoder or OFFICIAL_COMBOS[combo].text_encoder
    vision_model = vision_model or OFFICIAL_COMBOS[combo].vision_model
    _check_base_model_kinds(combo, text_encoder, vision_model)
    try:
        model = LaViBridge(
            text_encoder, vision_model, adapter={k: adapter.config[k] for k in ADAPTER_ARGS},
            text_lora=dict(rank=_rank(text_tensors), dropout=OFFICIAL_LORA_DROPOUT),
            vision_lora=dict(rank=_rank(vision_tensors), dropout=OFFICIAL_LORA_DROPOUT),
            weight_dtype=weight_dtype, **OFFICIAL_COMBOS[combo].options)
    except ValueError as err:
        raise ValueError(f"Cannot build the '{combo}' model for {ckpt_dir}: {err} (wrong combo, or "
                         "text_encoder/vision_model are not the models these weights were trained "
                         "on?)") from err

    _copy_lora(model.language.model, model.language.family.lora_target_classes, text_tensors,
               ckpt_dir / TEXT_LORA_FILE, f"text encoder {text_encoder} of combo '{combo}'")
    _copy_lora(model.denoiser, model.vision_family.lora_target_classes, vision_tensors,
               ckpt_dir / VISION_LORA_FILE, f"vision model {vision_model} of combo '{combo}'")
    model.adapter.load_state_dict(adapter.state_dict())
    # bridge.json last: an earlier bridge there stays usable until this one is whole
    with filled_folder(out_bridge_dir, BRIDGE_MANIFEST) as staging:
        model.save_bridge(staging, source="official", combo=combo)
    return Path(out_bridge_dir)


def _check_base_model_kinds(combo: str, text_encoder: str, vision_model: str) -> None:
    """Local base models must be of the combo's kinds, read from their configs: LoRA lists of the same
    shapes would convert and record the other combo's options (max_length, text mask, pad token)."""
    expected = OFFICIAL_COMBOS[combo]
    given = (AutoConfig.from_pretrained(text_encoder).model_type if Path(text_encoder).is_dir()
             else expected.language_model_type,
             find_vision_family(vision_model).subfolder if Path(vision_model).is_dir()
             else expected.denoiser_subfolder)
    if given == (expected.language_model_type, expected.denoiser_subfolder):
        return
    fitting = [name for name, kinds in OFFICIAL_COMBOS.items()
               if (kinds.language_model_type, kinds.denoiser_subfolder) == given]
    raise ValueError(f"combo '{combo}' bridges a {expected.language_model_type} language model to a "
                     f"{expected.denoiser_subfolder}/ denoiser, but {text_encoder} is {given[0]} and "
                     f"{vision_model} has a {given[1]}/ denoiser: "
                     + (f"use combo '{fitting[0]}'" if fitting else "no released combo pairs these"))


def _load_lora_list(path: Path) -> list[torch.Tensor]:
    """The authors' ``[up_0, down_0, ...]`` list, checked for what needs no model."""
    tensors = load_local_checkpoint(str(path), map_location="cpu")
    if not isinstance(tensors, (list, tuple)) or not all(isinstance(t, torch.Tensor) for t in tensors):
        raise ValueError(f"{path} should hold a list of tensors [up_0, down_0, up_1, down_1, ...], "
                         f"got {type(tensors).__name__}: not an official LaVi-Bridge LoRA file")
    if not tensors:
        raise ValueError(f"{path} holds an empty list: no LoRA weights")
    if len(tensors) % 2:
        raise ValueError(f"{path} holds {len(tensors)} tensors, an odd number, but the list "
                         "alternates up and down tensors: truncated list, or not an official "
                         "LaVi-Bridge LoRA file?")
    for index, tensor in enumerate(tensors):
        if tensor.dim() not in (2, 4):
            raise ValueError(f"{path}: tensor {index} has shape {tuple(tensor.shape)}, but LoRA "
                             "weights are 2-D (Linear) or 4-D (Conv2d): not an official "
                             "LaVi-Bridge LoRA file?")
    return list(tensors)


def _rank(tensors: list[torch.Tensor]) -> int:
    """LoRA rank of the first pair (its down tensor is (r, in, ...)); the others are checked against it."""
    return tensors[1].shape[0]


def _copy_lora(model: nn.Module, target_classes: Iterable[str], tensors: list[torch.Tensor],
               path: Path, what: str) -> None:
    """Check every (up, down) pair against its peft layer and copy it into lora_B / lora_A."""
    layers = official_lora_layers(model, target_classes)
    rank = _rank(tensors)
    # shapes first over the common prefix: the first mismatch says more than a count
    for pair, name in enumerate(layers[:len(tensors) // 2]):
        layer = model.get_submodule(name)
        up, down = tensors[2 * pair], tensors[2 * pair + 1]
        lora_b, lora_a = layer.lora_B["default"].weight, layer.lora_A["default"].weight
        for index, tensor, target, rank_dim in ((2 * pair, up, lora_b, 1), (2 * pair + 1, down, lora_a, 0)):
            if tensor.shape != target.shape:
                raise ValueError(_shape_error(path, what, index, name, layer.get_base_layer(), tensor,
                                              target, rank_dim, rank))
        with torch.no_grad():
            # pairs are copied in list order, so a repeated layer keeps the last pair as the
            # authors' loader does
            lora_b.copy_(up.float())
            lora_a.copy_(down.float())
    if len(tensors) != 2 * len(layers):
        problem = "too few: truncated list" if len(tensors) < 2 * len(layers) else "too many"
        raise ValueError(f"{path} holds {len(tensors)} tensors ({len(tensors) // 2} up/down pairs), "
                         f"but the {what} has {len(layers)} LoRA layers ({2 * len(layers)} tensors); "
                         f"{problem}, or the wrong combo?")


def _shape_error(path: Path, what: str, index: int, name: str, base: nn.Module,
                 tensor: torch.Tensor, target: torch.Tensor, rank_dim: int, rank: int) -> str:
    """Which file, tensor and layer, expected vs. got, and the likely cause."""
    role = "up" if rank_dim == 1 else "down"
    got, expected = tuple(tensor.shape), tuple(target.shape)
    if isinstance(base, nn.Conv2d):
        layer = f"Conv2d {base.in_channels}->{base.out_channels}, kernel {tuple(base.kernel_size)}"
    else:
        layer = f"Linear {base.in_features}->{base.out_features}"
    message = (f"{path}: tensor {index} ({role} of pair {index // 2}) is for layer '{name}' "
               f"({layer}) and should have shape {expected}, got {got}. ")
    same_but_rank = (len(got) == len(expected) and
                     all(g == e for d, (g, e) in enumerate(zip(got, expected, strict=False)) if d != rank_dim))
    if same_but_rank:
        return message + (f"Its LoRA rank is {got[rank_dim]}, but the list's first pair has rank "
                          f"{rank}: all layers must share one rank (wrong rank, or a corrupted or "
                          "mixed list?)")
    return message + (f"Wrong combo? These weights do not fit the {what} (or they come from a "
                      "model version whose layers are ordered differently).")
