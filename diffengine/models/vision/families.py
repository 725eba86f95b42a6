"""One entry per generative vision model family: its class, LoRA targets and context width."""
from dataclasses import dataclass


@dataclass(frozen=True)
class VisionFamily:
    """How a family of denoisers plugs into a bridge."""

    class_names: tuple[str, ...]  # diffusers ``_class_name`` values of the denoiser's config
    subfolder: str  # where the denoiser lives inside a diffusers base-model folder
    lora_target_classes: tuple[str, ...]  # the paper's VIS_REPLACE_MODULES
    context_dim_key: str  # config key giving the width the adapter must output


VISION_FAMILIES: dict[str, VisionFamily] = {
    "sd_unet": VisionFamily(
        class_names=("UNet2DConditionModel",),
        subfolder="unet",
        lora_target_classes=("ResnetBlock2D", "CrossAttention", "Attention", "GEGLU"),
        context_dim_key="cross_attention_dim"),
}


def vision_family_of(class_name: str) -> VisionFamily:
    """Return the family of a diffusers denoiser class name or raise a clear error."""
    for family in VISION_FAMILIES.values():
        if class_name in family.class_names:
            return family
    known = sorted(n for f in VISION_FAMILIES.values() for n in f.class_names)
    raise ValueError(f"Vision model class '{class_name}' has no LaVi-Bridge family "
                     f"(known: {', '.join(known)}); add one to VISION_FAMILIES.")
