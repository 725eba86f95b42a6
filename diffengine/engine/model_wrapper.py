"""DDP that also runs on CPU (gloo), where MMEngine's device ids would be rejected; unwrapping."""
from mmengine.model import MMDistributedDataParallel, is_model_wrapper
from torch import nn

from diffengine.contracts import TextToImageModel
from diffengine.registry import MODEL_WRAPPERS


@MODEL_WRAPPERS.register_module()
class DeviceAgnosticDDP(MMDistributedDataParallel):
    """``MMDistributedDataParallel`` that drops ``device_ids`` for a CPU module.

    MMEngine's ``Runner.wrap_model`` always passes ``device_ids=[LOCAL_RANK]`` to DDP subclasses;
    PyTorch only accepts device ids for single-device GPU modules.
    """

    def __init__(self, module, device_ids=None, **kwargs):
        if next(module.parameters()).device.type == "cpu":
            device_ids = None
        super().__init__(module=module, device_ids=device_ids, **kwargs)


def unwrap_model(model: nn.Module) -> nn.Module:
    """The model inside a DDP/FSDP wrapper (MMEngine's ``is_model_wrapper``), or ``model`` itself."""
    return model.module if is_model_wrapper(model) else model


def text_to_image_model(model: nn.Module, user: str) -> TextToImageModel:
    """The unwrapped model, checked to generate images (``infer``) for ``user``, a hook's name."""
    model = unwrap_model(model)
    if not isinstance(model, TextToImageModel):
        raise TypeError(f"{user} needs a model that generates images (an infer() method); "
                        f"{type(model).__name__} has none")
    return model
