"""Resuming a run: which checkpoint a work dir resumes from, and what the new command line changes."""
import ast
import logging
from pathlib import Path
from typing import Any

from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.logging import print_log

from diffengine.constants import LAST_CHECKPOINT
from diffengine.registry import HOOKS
from diffengine.work_dirs import checkpoint_bridge, checkpoints_in

from .model_wrapper import unwrap_model

# the parts of a scheduler's state that are its configuration, which a resumed run may change; the
# rest (last_step, _last_value, ReduceOnPlateau's best and counters, ...) is where it is in its schedule
_SCHEDULER_SETTINGS = frozenset({"begin", "end", "by_epoch", "base_values", "eta_min", "eta_min_ratio", "T_max",
                                 "factor", "start_factor", "end_factor", "gamma", "milestones", "power"})
# the checkpoint meta entry holding the model's weight_settings: a resume whose bridge folder was
# pruned (or never kept, bridge max_keep < checkpoint max_keep_ckpts) still checks them
WEIGHT_SETTINGS_META = "weight_settings"
# options that name the run's place and mode, not what it computes
_RUN_LOCATION_KEYS = ("work_dir", "resume", "load_from", "launcher", "experiment_name")


def find_resume_checkpoint(work_dir: str | Path) -> Path | None:
    """The checkpoint ``--resume`` continues from: the one ``last_checkpoint`` names, in *this* work dir.

    MMEngine writes an absolute path into ``last_checkpoint``; only its file name is used, so a
    renamed or copied work dir resumes from its own files. An empty or stale ``last_checkpoint``
    falls back to the newest ``iter_N.pth``.
    """
    work_dir = Path(work_dir)
    pointer = work_dir / LAST_CHECKPOINT
    if pointer.is_file():
        recorded = Path(pointer.read_text().strip())
        named = work_dir / recorded.name
        if recorded.name and named.is_file():
            return named
        if recorded.name and recorded.is_file():  # CheckpointHook(out_dir=...) saves outside the work dir
            return recorded
    saved = checkpoints_in(work_dir)
    return saved[-1] if saved else None


def _flat(cfg: dict | list | tuple, prefix: str = "") -> dict[str, Any]:
    """``{"a.b.0.c": value}`` for nested dicts and lists (list items keyed by index)."""
    items = cfg.items() if isinstance(cfg, dict) else enumerate(cfg)
    flat = {}
    for key, value in items:
        if isinstance(value, (dict, list, tuple)) and value:
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _literal(node: ast.AST) -> Any:
    """The value of a literal, ``dict(k=v, ...)`` or ``inf``/``nan`` node; ValueError for anything else."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict" \
            and not node.args and all(k.arg for k in node.keywords):
        return {k.arg: _literal(k.value) for k in node.keywords}
    if isinstance(node, ast.Name) and node.id in ("inf", "nan"):
        return float(node.id)
    if isinstance(node, ast.List | ast.Tuple):
        values = [_literal(item) for item in node.elts]
        return values if isinstance(node, ast.List) else tuple(values)
    if isinstance(node, ast.Dict):
        return {_literal(k): _literal(v) for k, v in zip(node.keys, node.values, strict=True)}
    return ast.literal_eval(node)


def saved_config(text: str) -> dict[str, Any]:
    """The top-level entries of a config text saved in a checkpoint, read without running it.

    ``Config.fromstring`` would execute the text, so a crafted checkpoint could run code; entries
    that are not plain data are left out.
    """
    entries = {}
    for statement in ast.parse(text).body:
        if isinstance(statement, ast.Assign) and len(statement.targets) == 1 \
                and isinstance(statement.targets[0], ast.Name):
            try:
                entries[statement.targets[0].id] = _literal(statement.value)
            except (ValueError, TypeError, SyntaxError):
                continue
    return entries


def config_differences(saved_text: str, current: Config) -> dict[str, tuple[Any, Any]]:
    """``{key: (checkpoint's value, this run's value)}`` for every config entry that differs."""
    saved = _flat(saved_config(saved_text))
    now = _flat(saved_config(current.pretty_text))
    return {key: (saved.get(key), now.get(key)) for key in sorted(set(saved) | set(now))
            if key.split(".")[0] not in _RUN_LOCATION_KEYS and repr(saved.get(key)) != repr(now.get(key))}


def check_checkpoint_fits(state_dict: dict, model, complete: bool = True) -> None:
    """Raise ValueError saying what differs when a checkpoint's weights do not fit ``model``'s.

    ``complete``: every tensor of the model must be in the checkpoint (resuming), not only those
    the checkpoint has (``load_from`` may start from part of a model).

    Only the model's own state counts (for ``LaViBridge``, its LoRA and adapter weights): a
    checkpoint of another LoRA rank or adapter size fails here, in one message, instead of in a
    warning per tensor and then inside the optimizer.
    """
    state_dict = {key.removeprefix("module."): value for key, value in state_dict.items()}
    own = model.state_dict()
    reshaped = [(k, tuple(v.shape), tuple(own[k].shape)) for k, v in state_dict.items()
                if k in own and hasattr(v, "shape") and tuple(v.shape) != tuple(own[k].shape)]
    missing = [k for k in own if k not in state_dict] if complete else []
    unexpected = [k for k in state_dict if k not in own]
    if not (reshaped or missing or unexpected):
        return
    parts = []
    if reshaped:
        key, saved, now = reshaped[0]
        parts.append(f"{len(reshaped)} tensors differ in shape, e.g. {key}: checkpoint {saved}, model {now}")
    if missing:
        parts.append(f"{len(missing)} of the model's tensors are missing, e.g. {missing[0]}")
    if unexpected:
        parts.append(f"{len(unexpected)} tensors are not in the model, e.g. {unexpected[0]}")
    raise ValueError(f"the checkpoint does not fit this model ({'; '.join(parts)}): was it trained "
                     "with other LoRA ranks, adapter dims or base models?")


@HOOKS.register_module()
class ResumeOverridesHook(Hook):
    """On resume, this run's configuration wins over the checkpoint's, and the log says what changed.

    MMEngine restores the optimizer's settings and the schedulers' from the checkpoint, so a new
    ``--cfg-options optim_wrapper...lr=`` or ``weight_decay=`` or scheduler ``end=`` was silently
    ignored. Here the checkpoint's optimizer and scheduler states are edited before MMEngine loads
    them: each group keeps its moments and its place in the schedule, with this run's settings
    and base learning rate (the current one scaled alike).
    ``DiffEngineRunner`` registers it itself.
    """

    priority = "HIGH"

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        """Record the settings that give the bridge weights their meaning in the checkpoint's meta."""
        settings = getattr(unwrap_model(runner.model), "weight_settings", None)
        if settings is not None:
            checkpoint.setdefault("meta", {})[WEIGHT_SETTINGS_META] = settings

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        """Check the checkpoint fits the model; on resume, log config changes and apply this run's rates."""
        # MMEngine's resume would run an older checkpoint's "config" text as Python
        checkpoint.get("meta", {}).pop("config", None)
        check_checkpoint_fits(checkpoint.get("state_dict", {}), unwrap_model(runner.model),
                              complete=runner._resume)
        if not runner._resume:
            return
        self._check_bridge_settings(runner, checkpoint)
        saved_cfg = checkpoint.get("meta", {}).get("cfg")
        if saved_cfg:
            try:
                differences = config_differences(saved_cfg, runner.cfg)
            except SyntaxError:
                differences = {}
                print_log("resume: the checkpoint's config could not be read, so its differences from "
                          "this run are not listed", logger="current", level=logging.WARNING)
            for key, (before, after) in differences.items():
                print_log(f"resume: {key} = {after!r} (the checkpoint's run had {before!r})",
                          logger="current", level=logging.INFO)
        if "optimizer" in checkpoint:
            self._apply_group_settings(runner, checkpoint["optimizer"].get("param_groups", []))
        if "param_schedulers" in checkpoint and isinstance(runner.param_schedulers, list):
            for scheduler, saved in zip(runner.param_schedulers, checkpoint["param_schedulers"], strict=False):
                saved.update({key: value for key, value in scheduler.state_dict().items()
                              if key in _SCHEDULER_SETTINGS})

    @staticmethod
    def _check_bridge_settings(runner, checkpoint: dict) -> None:
        """Refuse to resume a bridge under settings that change what its weights mean (the layer
        the adapter reads, the prediction type, ...), as ``model.bridge_path`` refuses them: the
        bridge saved with the checkpoint records those it was trained with, and where it is gone,
        the checkpoint's meta."""
        from diffengine.errors import ConfigError
        from diffengine.models.editors.lavi_bridge.lavi_bridge import check_bridge_settings, check_weight_settings

        model = unwrap_model(runner.model)
        if not hasattr(model, "weight_settings"):
            return
        meta = checkpoint.get("meta", {})
        iteration = meta.get("iter")
        saved = (checkpoint_bridge(runner.cfg.get("load_from"), iteration, runner.work_dir)
                 if isinstance(iteration, int) else None)
        recorded = meta.get(WEIGHT_SETTINGS_META)
        try:
            if saved is not None:
                check_bridge_settings(saved, model.weight_settings, model.base_models, model.language.max_length,
                                      base_fingerprints=model.base_fingerprints)
            elif isinstance(recorded, dict):
                check_weight_settings(recorded, model.weight_settings, f"checkpoint {runner.cfg.get('load_from')}")
        except ValueError as error:
            raise ConfigError(f"--resume: {error}") from None

    @staticmethod
    def _apply_group_settings(runner, saved_groups: list[dict]) -> None:
        """This run's optimizer settings (weight decay, betas, ...) and base rates in the saved groups."""
        groups = runner.optim_wrapper.optimizer.param_groups
        if len(groups) != len(saved_groups):
            return  # MMEngine's optimizer load reports the mismatch
        for group, saved in zip(groups, saved_groups, strict=True):
            saved.update({key: value for key, value in group.items() if key not in ("params", "lr", "initial_lr")})
            configured = group.get("initial_lr", group["lr"])
            saved_base = saved.get("initial_lr", saved["lr"])
            if saved_base != configured:
                name = group.get("name", f"group {groups.index(group)}")
                print_log(f"resume: {name} learning rate {configured:g} from this run's config (the "
                          f"checkpoint's run had {saved_base:g})", logger="current", level=logging.WARNING)
                saved["lr"] = saved["lr"] * configured / saved_base if saved_base else configured
                saved["initial_lr"] = configured
