"""Move a batch to the device and turn uint8 pixels into [-1, 1] floats there."""
import torch
from mmengine.model import BaseDataPreprocessor

from diffengine.contracts import PIXELS_KEY
from diffengine.registry import MODELS


def normalize_pixels(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 pixels to float32 in [-1, 1]; float pixels are taken to be there already."""
    if pixels.dtype == torch.uint8:
        return pixels.float().div_(127.5).sub_(1.0)
    return pixels


@MODELS.register_module()
class DiffusionDataPreprocessor(BaseDataPreprocessor):
    """Loaders ship uint8 pixels (4x fewer bytes to collate and copy); normalise after the copy.

    Shared by every editor that trains on images. Float pixels are taken to be in [-1, 1]
    already and pass unchanged, and so do the ``latent_parameters`` of latent shards. The copy to
    the GPU does not wait for it (``non_blocking``): from a loader's pinned memory
    (``pin_memory=True``, as the LAION configs set) it overlaps the previous step's work.
    """

    def __init__(self, non_blocking: bool = True) -> None:
        super().__init__(non_blocking=non_blocking)

    def forward(self, data: dict, training: bool = False) -> dict:
        """Cast to the device, then scale uint8 ``pixel_values`` to float32 in [-1, 1]."""
        data = self.cast_data(data)
        if PIXELS_KEY in data["inputs"]:
            data["inputs"][PIXELS_KEY] = normalize_pixels(data["inputs"][PIXELS_KEY])
        return data
