"""The interfaces the engine relies on, named: what loops, hooks and optimizers expect of a dataset or model.

Import-free apart from typing, so every layer (datasets, models, engine) can refer to them.
"""
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

# data_samples key of a streamed batch: how far its worker's stream had read when the batch was
# made (the loop stores it in checkpoints; the dataset fast-forwards to it on resume)
STREAM_POSITION_KEY = "stream_position"

# the inputs of a training batch, from the loader's samples through the data preprocessor to a
# model's loss: images (uint8 (B, 3, R, R); [-1, 1] floats after the preprocessor) or, from latent
# shards, the VAE's latent_dist parameters ((B, 2C, h, w)), the captions (B strings), and for image
# samples the SDXL micro-conditions: each image's (height, width) before resizing and its crop's
# (top, left), int (B, 2)
PIXELS_KEY = "pixel_values"
LATENTS_KEY = "latent_parameters"
TEXT_KEY = "text"
ORIGINAL_SIZE_KEY = "original_size"
CROP_TOP_LEFT_KEY = "crop_top_left"
SIZE_KEYS = (ORIGINAL_SIZE_KEY, CROP_TOP_LEFT_KEY)


@runtime_checkable
class EpochStream(Protocol):
    """A sized streaming dataset whose ``set_epoch`` reseeds its order (``StreamingIterBasedTrainLoop``)."""

    def __len__(self) -> int: ...

    def set_epoch(self, epoch: int) -> None: ...


@runtime_checkable
class ResumableStream(EpochStream, Protocol):
    """An ``EpochStream`` that fast-forwards each worker past batches already trained."""

    seed: int
    # a digest of the shards read and the options choosing and ordering their samples:
    # positions apply to the same stream only
    stream_fingerprint: str

    def resume_from(self, epoch: int, batches_trained: int, positions: Sequence[int]) -> None: ...


@runtime_checkable
class GroupedParameters(Protocol):
    """A model whose trainable parameters come in named optimizer groups (``ParamGroupsOptimWrapperConstructor``)."""

    def parameter_groups(self) -> dict[str, list[Any]]: ...


@runtime_checkable
class TextToImageModel(Protocol):
    """A model that generates images from prompts (``VisualizationHook``, ``ShapesBenchHook``, ``eval``)."""

    def infer(self, prompts: list[str] | str, **kwargs: Any) -> list[Any]: ...
