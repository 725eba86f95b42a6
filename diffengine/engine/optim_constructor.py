"""One optimizer parameter group per model part (bridge LoRA, adapter, UNet, ...), each with its own learning rate."""
import inspect
import logging

from mmengine.logging import print_log
from mmengine.optim import DefaultOptimWrapperConstructor, OptimWrapper
from torch import nn

from diffengine.contracts import GroupedParameters
from diffengine.registry import OPTIM_WRAPPER_CONSTRUCTORS, OPTIM_WRAPPERS, OPTIMIZERS

from .model_wrapper import unwrap_model
from .optim_wrapper import GuardedOptimWrapper


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class ParamGroupsOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """Builds named groups from ``model.parameter_groups()`` with ``paramwise_cfg['group_lr']``.

    Only trainable parameters enter the optimizer (frozen weights would only bloat its state);
    a group missing from ``group_lr`` uses the optimizer's ``lr``. The wrapper defaults to
    ``GuardedOptimWrapper`` (non-finite steps skipped).
    """

    # the only paramwise option read: MMEngine's own (custom_keys, decay multipliers) would be ignored
    PARAMWISE_KEYS = ("group_lr",)

    @classmethod
    def check_paramwise_cfg(cls, paramwise_cfg: dict | None) -> None:
        """Raise ValueError for a ``paramwise_cfg`` key this constructor does not read."""
        unknown = sorted(set(paramwise_cfg or {}) - set(cls.PARAMWISE_KEYS))
        if unknown:
            raise ValueError(f"paramwise_cfg.{unknown[0]}: {cls.__name__} reads only "
                             f"{', '.join(cls.PARAMWISE_KEYS)} (one learning rate per parameter group)")

    def _validate_cfg(self) -> None:
        super()._validate_cfg()
        self.check_paramwise_cfg(self.paramwise_cfg)

    def __call__(self, model: nn.Module) -> OptimWrapper:
        """Return the optimizer wrapper for ``model`` (unwrapped from DDP if needed)."""
        model = unwrap_model(model)
        if not isinstance(model, GroupedParameters):
            raise TypeError(f"{type(model).__name__} has no parameter_groups(): "
                            "ParamGroupsOptimWrapperConstructor needs the model's named parameter groups")
        group_lr = dict((self.paramwise_cfg or {}).get("group_lr", {}))
        groups = model.parameter_groups()
        unknown = set(group_lr) - set(groups)
        if unknown:
            raise ValueError(f"group_lr names unknown parameter groups {sorted(unknown)}; "
                             f"the model has {sorted(groups)}")
        if self.base_lr is not None and all(name in group_lr for name, group in groups.items() if group):
            print_log(f"optimizer.lr={self.base_lr} is not used: every parameter group has its own "
                      f"rate in paramwise_cfg.group_lr ({group_lr})", logger="current", level=logging.INFO)
        params = [{"name": name, "params": group, "lr": group_lr.get(name, self.base_lr)}
                  for name, group in groups.items() if group]
        optimizer_cfg = self.optimizer_cfg.copy()
        optimizer_cls = optimizer_cfg["type"]
        if isinstance(optimizer_cls, str):
            optimizer_cls = OPTIMIZERS.get(optimizer_cls)
        optimizer_cfg[next(iter(inspect.signature(optimizer_cls).parameters))] = params
        optimizer = OPTIMIZERS.build(optimizer_cfg)
        optim_wrapper_cfg = self.optim_wrapper_cfg.copy()
        optim_wrapper_cfg.setdefault("type", GuardedOptimWrapper)
        return OPTIM_WRAPPERS.build(optim_wrapper_cfg, default_args=dict(optimizer=optimizer))
