"""DDP that also runs on CPU (gloo), where MMEngine's device ids would be rejected; DDP with the
frozen language model sharded over the ranks (FSDP2); unwrapping."""
from mmengine.dist import is_main_process
from mmengine.model import MMDistributedDataParallel, is_model_wrapper
from torch import nn
from torch.distributed.fsdp import fully_shard
from torch.nn.parallel import DistributedDataParallel

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


@MODEL_WRAPPERS.register_module()
class ShardedLanguageModelDDP(DeviceAgnosticDDP):
    """DDP over a bridge whose frozen language model is sharded across the ranks with FSDP2.

    For language models too large to copy to every GPU: each rank keeps 1/world of the LM's
    weights, and its forward gathers one decoder layer (the model's ``_no_split_modules``) at a
    time. The adapter and the vision side stay replicated, their gradients all-reduced by DDP as
    usual. A sharded forward needs every rank, so the sampling and scoring hooks run inference on
    all ranks (``infers_on_this_rank``) and only rank 0 writes. The LM must train nothing
    (``model.text_lora.rank=0``): sharded trainable weights would need gathering for bridges and
    checkpoints and a gradient norm over sharded tensors, which this wrapper does not do.
    """

    def __init__(self, module, device_ids=None, **kwargs):
        language = module.language.model
        trainable = sum(p.numel() for p in language.parameters() if p.requires_grad)
        if trainable:
            raise ValueError(f"ShardedLanguageModelDDP shards a frozen language model, and this one trains "
                             f"{trainable} parameters (its LoRA): set model.text_lora.rank=0")
        layer_classes = set(getattr(language, "_no_split_modules", None) or ())
        for layer in [m for m in language.modules() if type(m).__name__ in layer_classes]:
            fully_shard(layer)
        fully_shard(language)
        # FSDP2 keeps the root's weights gathered after its forward, for the backward that a frozen
        # LM never runs; rank 0's checkpoint (state_dict) would reshard them on rank 0 alone, and
        # the ranks' next all-gathers would no longer match. Reshard after every forward instead
        language.register_forward_hook(_reshard_after_forward)
        prefix = next(name for name, child in module.named_modules() if child is language)
        ignored = [f"{prefix}.{name}" for name, _ in [*language.named_parameters(), *language.named_buffers()]]
        # DDP neither broadcasts nor all-reduces the sharded weights: FSDP2 owns them
        DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(module, ignored)
        super().__init__(module=module, device_ids=device_ids, **kwargs)


def _reshard_after_forward(module: nn.Module, args: tuple, output: object) -> None:
    module.reshard()


def infers_on_this_rank(model: nn.Module) -> bool:
    """Whether this rank generates with ``model`` for a hook: rank 0, and every rank when the
    language model is sharded (its forward needs them all; rank 0 still writes alone)."""
    return is_main_process() or isinstance(model, ShardedLanguageModelDDP)


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
