"""LAION-style filters on a sample's json metadata, applied before its image is decoded."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class MetadataFilter:
    """LAION-style filters on a sample's json metadata; a missing field passes its filter."""

    min_original_size: int | None = None
    max_pwatermark: float | None = None
    max_punsafe: float | None = None
    aspect_ratio_range: tuple[float, float] | None = None
    min_caption_length: int = 1

    def __post_init__(self) -> None:
        ratios = self.aspect_ratio_range
        if ratios is not None and not (len(ratios) == 2 and 0 < ratios[0] <= ratios[1]):
            raise ValueError(f"aspect_ratio_range must be [low, high] with 0 < low <= high, got {list(ratios)}: "
                             "every sample would be filtered out, or the filter would fail mid-epoch")

    def reason(self, meta: dict[str, Any], caption: str) -> str | None:
        """Name of the first filter the sample fails, or None when it passes all."""
        width = _number(meta, "original_width", "width")
        height = _number(meta, "original_height", "height")
        if self.min_original_size is not None and any(
                side is not None and side < self.min_original_size for side in (width, height)):
            return "min_size"
        if self.max_pwatermark is not None and (_number(meta, "pwatermark") or 0.0) > self.max_pwatermark:
            return "pwatermark"
        if self.max_punsafe is not None and (_number(meta, "punsafe") or 0.0) > self.max_punsafe:
            return "punsafe"
        if self.aspect_ratio_range is not None and width and height:
            low, high = self.aspect_ratio_range
            if not low <= width / height <= high:
                return "aspect_ratio"
        if len(caption) < self.min_caption_length:
            return "caption_length"
        return None


def _number(meta: dict[str, Any], *names: str) -> float | None:
    """First of `names` holding a real number in `meta` (img2dataset writes null for unknowns)."""
    for name in names:
        value = meta.get(name)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    return None
