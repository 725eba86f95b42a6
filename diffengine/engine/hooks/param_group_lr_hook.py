"""Log the learning rate of every named optimizer group, not only the first one."""
from mmengine.hooks import Hook

from diffengine.registry import HOOKS


@HOOKS.register_module()
class ParamGroupLrHook(Hook):
    """Writes ``train/lr_<group name>`` to the message hub after each iteration."""

    priority = "NORMAL"  # before LoggerHook (BELOW_NORMAL) reads the message hub

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        """Record each named group's current learning rate."""
        for group in runner.optim_wrapper.optimizer.param_groups:
            if "name" in group:
                runner.message_hub.update_scalar(f"train/lr_{group['name']}", group["lr"])
