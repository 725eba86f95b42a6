"""DDP that also runs on CPU (gloo), where MMEngine's device ids would be rejected."""
from mmengine.model import MMDistributedDataParallel

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
