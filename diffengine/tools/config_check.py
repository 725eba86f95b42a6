"""Check a resolved training config against what it configures, before anything is built.

Every ``dict(type=X, ...)`` in the sections MMEngine builds is compared with the signature of
``X``: an unknown option (``default_hooks.checkpoint.intervall``) fails now, with close matches,
not when the hook first uses it an interval of compute later; a value of the wrong basic type
(``batch_size='abc'``) or out of range (``max_iters=0``) fails with the key that holds it.
"""
import collections.abc
import difflib
import inspect
import math
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from diffengine.errors import ConfigError

if TYPE_CHECKING:
    from mmengine.config import Config

# the config keys MMEngine's Runner.from_cfg and diffengine's commands read at the top level
RUNNER_KEYS = frozenset({
    "model", "work_dir", "train_dataloader", "val_dataloader", "test_dataloader", "train_cfg",
    "val_cfg", "test_cfg", "auto_scale_lr", "optim_wrapper", "param_scheduler", "val_evaluator",
    "test_evaluator", "default_hooks", "custom_hooks", "data_preprocessor", "load_from", "resume",
    "launcher", "env_cfg", "log_processor", "log_level", "visualizer", "default_scope",
    "randomness", "experiment_name", "model_wrapper_cfg", "compile", "cfg",
})
# arguments the runner passes itself: never in the config
_PASSED_BY_RUNNER = {"runner", "dataloader", "optimizer", "module", "model", "params"}
# keys MMEngine reads itself before building the section: the optim_wrapper keys its constructor
# reads, a hook's priority (Runner.register_hook), a scheduler's convert_to_iter_based
_READ_BY_MMENGINE = {"optim_wrapper": {"constructor", "optimizer", "paramwise_cfg"},
                     "hook": {"priority"}, "param_scheduler": {"convert_to_iter_based"}}
# the sampling hooks' options (VisualizationHook, ShapesBenchHook), checked as inference checks them
_SAMPLING_OPTIONS = ("num_inference_steps", "guidance_scale", "height", "width", "scheduler", "seed",
                     "negative_prompt")
# smallest valid value of numeric options, wherever they appear (a negative weight decay grows
# the weights; MMEngine and torch check the others only once the model is built)
_MINIMUMS = {"max_iters": 1, "batch_size": 1, "num_workers": 0, "interval": 1,
             "num_samples_per_epoch": 1, "max_keep_ckpts": 1, "accumulative_counts": 1,
             "max_consecutive_nonfinite": 1, "host_read_interval": 1, "images_per_prompt": 1,
             "prefetch_factor": 1, "weight_decay": 0, "shuffle_buffer": 0, "val_interval": 1,
             "max_keep": 1}
# what MMEngine's schedulers multiply the learning rate by, and the bounds that keep it a rate that
# trains: a factor of 0 holds it at 0 for the whole run, a start_factor of 0 divides by zero at
# the second step, a negative eta_min ends the run training uphill
_SCHEDULE_BOUNDS = {"factor": ("in (0, 1]", lambda v: 0 < v <= 1),
                    "start_factor": ("in (0, 1]", lambda v: 0 < v <= 1),
                    "end_factor": ("in [0, 1]", lambda v: 0 <= v <= 1),
                    "eta_min": (">= 0", lambda v: v >= 0),
                    "eta_min_ratio": ("in [0, 1]", lambda v: 0 <= v <= 1)}


def check_cfg_options(cfg: "Config", options: dict[str, Any]) -> None:
    """Reject ``--cfg-options`` keys that name no config entry and no argument of a typed section."""
    for key in options:
        parts = key.split(".")
        if parts[0] not in cfg and parts[0] not in RUNNER_KEYS:
            known = sorted(k for k in cfg if not k[:1].isupper() and k != "read_base")
            raise ConfigError(f"--cfg-options {key}: the config has no {parts[0]!r}{_did_you_mean(parts[0], known)}")


def check_config(cfg: "Config", registries: dict[str, Any]) -> None:
    """Raise ``ConfigError`` for an unknown type, an unknown option or a bad basic value in ``cfg``.

    ``registries`` maps a section name (``model``, ``hooks``, ...) to the registry its string
    ``type`` names are looked up in.
    """
    for where, node, registry, section in _typed_sections(cfg, registries):
        target = _resolve(node["type"], registry)
        if target is None:
            names = list(registry.module_dict) if registry is not None else []
            raise ConfigError(f"{where}.type: unknown type {node['type']!r}{_did_you_mean(str(node['type']), names)}")
        accepted, hints = _parameters(target)
        skip = _READ_BY_MMENGINE.get(section, set())
        for key, value in node.items():
            if key == "type" or key in skip:
                continue
            if accepted is not None and key not in accepted:
                raise ConfigError(f"{where}.{key}: {_name(target)} has no option {key!r}"
                                  f"{_did_you_mean(key, sorted(accepted))}; it takes "
                                  f"{', '.join(sorted(accepted)) or 'no options'}")
            _check_value(f"{where}.{key}", value, hints.get(key), target)


def check_plain_sections(cfg: "Config") -> None:
    """The untyped sections the runner unpacks itself: ``randomness`` (``Runner.set_randomness``),
    ``log_processor`` (``LogProcessor``) and ``env_cfg`` (read by ``Runner.setup_env``), whose
    unknown keys would be a TypeError when the runner is built, or silently ignored (``env_cfg``)."""
    from mmengine.runner import LogProcessor, Runner

    sections = {"randomness": Runner.set_randomness, "log_processor": LogProcessor}
    for where, target in sections.items():
        node = cfg.get(where)
        if not isinstance(node, dict) or "type" in node:
            continue
        accepted, hints = _parameters(target)
        accepted = sorted(accepted - {"self"})
        for key, value in node.items():
            if key not in accepted:
                raise ConfigError(f"{where}.{key}: {where} has no option {key!r}{_did_you_mean(key, accepted)}; "
                                  f"it takes {', '.join(accepted)}")
            _check_value(f"{where}.{key}", value, hints.get(key))
    seed = (cfg.get("randomness") or {}).get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32):
        raise ConfigError(f"randomness.seed must be a whole number from 0 to 2**32 - 1 (or None: a random one), "
                          f"got {seed!r}")
    env = cfg.get("env_cfg")
    known = ["cudnn_benchmark", "dist_cfg", "mp_cfg", "resource_limit"]
    for key in env if isinstance(env, dict) else ():
        if key not in known:
            raise ConfigError(f"env_cfg.{key}: env_cfg has no option {key!r}{_did_you_mean(key, known)}; it takes "
                              f"{', '.join(known)}")


def check_epoch_counting(cfg: "Config", registries: dict[str, Any]) -> None:
    """An iteration-based loop runs a single epoch, so a hook or schedule that counts epochs (by
    MMEngine's default ``by_epoch=True``) would act only at the end: no checkpoint before it, a
    warm-up that never ends. Refused unless MMEngine converts the schedule to iterations."""
    if "max_iters" not in (cfg.get("train_cfg") or {}):
        return
    for where, node, registry, section in _typed_sections(cfg, registries):
        if section not in ("hook", "param_scheduler") or node.get("convert_to_iter_based"):
            continue
        target = _resolve(node["type"], registry)
        # the inherited default counts for MMEngine's and diffengine's classes only: a user's
        # subclass may pass by_epoch=False to its base itself
        own = getattr(target, "__module__", "").startswith(("mmengine.", "diffengine."))
        if node.get("by_epoch", _default(target, "by_epoch") if own else None) is True:
            raise ConfigError(f"{where}: {_name(target)} counts epochs (by_epoch=True), but train_cfg "
                              f"counts iterations in one epoch, so it would act only at the end: set "
                              f"{where}.by_epoch=False")


def check_training_values(cfg: "Config") -> None:
    """Learning rates must be positive finite numbers (a negative one trains uphill without an
    error), paramwise options ones the optimizer constructor reads, sampling hooks' options ones
    inference takes (a sampler the base model's schedule can use), and the training resolution a
    multiple of 8, which every pipeline asks to sample at."""
    from diffengine.constants import PIXEL_MULTIPLE
    from diffengine.engine import ParamGroupsOptimWrapperConstructor, ShapesBenchHook, VisualizationHook
    from diffengine.models.vision.samplers import check_sampler, check_sampling_options
    from diffengine.registry import HOOKS, OPTIM_WRAPPER_CONSTRUCTORS

    optim = cfg.get("optim_wrapper") or {}
    constructor = optim.get("constructor")
    if isinstance(constructor, str):
        constructor = OPTIM_WRAPPER_CONSTRUCTORS.get(constructor)
    if isinstance(constructor, type) and issubclass(constructor, ParamGroupsOptimWrapperConstructor):
        try:
            constructor.check_paramwise_cfg(optim.get("paramwise_cfg"))
        except ValueError as error:
            raise ConfigError(f"optim_wrapper.{error}") from None
    if optim.get("clip_grad") is not None:
        _check_clip_grad(optim["clip_grad"])
    group_lr = (optim.get("paramwise_cfg") or {}).get("group_lr") or {}
    rates = {"optim_wrapper.optimizer.lr": (optim.get("optimizer") or {}).get("lr"),
             **{f"optim_wrapper.paramwise_cfg.group_lr.{name}": rate for name, rate in group_lr.items()}}
    for where, rate in rates.items():
        if rate is not None and (isinstance(rate, bool) or not isinstance(rate, int | float)
                                 or not math.isfinite(rate) or rate <= 0):
            raise ConfigError(f"{where} must be a number > 0, got {rate!r}")
    vision_model = (cfg.get("model") or {}).get("vision_model")
    for index, hook in enumerate(cfg.get("custom_hooks") or []):
        kind = _resolve(hook.get("type"), HOOKS) if isinstance(hook, dict) else None
        if not (isinstance(kind, type) and issubclass(kind, (VisualizationHook, ShapesBenchHook))):
            continue
        if issubclass(kind, VisualizationHook) and not hook.get("prompts", True):
            raise ConfigError(f"custom_hooks.{index}.prompts holds no prompt: give at least one, or drop the hook")
        sampling = {key: value for key, value in hook.items() if key in _SAMPLING_OPTIONS}
        try:
            check_sampling_options(**sampling)
            # a folder without the scheduler's config is named by the model folder check
            if isinstance(vision_model, str) and (Path(vision_model) / "scheduler" / "scheduler_config.json").is_file():
                check_sampler(sampling.get("scheduler"), vision_model)
        except ValueError as error:
            raise ConfigError(f"custom_hooks.{index}.{error}") from None
    loader = cfg.get("train_dataloader") or {}
    resolution = loader.get("resolution") if isinstance(loader, dict) else None
    if isinstance(resolution, int) and resolution % PIXEL_MULTIPLE:
        raise ConfigError(f"train_dataloader.resolution must be a multiple of {PIXEL_MULTIPLE} pixels, "
                          f"got {resolution}: a bridge trained at it could not sample at its own size")


def check_model_folder_hooks(cfg: "Config") -> None:
    """A hook that writes model folders (``BridgeCheckpointHook``, ``ModelFolderCheckpointHook``)
    calls a method of the model that the model must have: else the first checkpoint, an interval
    into training, would fail with an AttributeError and be lost."""
    from diffengine.engine import ModelFolderCheckpointHook
    from diffengine.registry import HOOKS, MODELS

    model = _resolve((cfg.get("model") or {}).get("type"), MODELS)
    if not isinstance(model, type):
        return
    writers = [name for name in ("save_bridge", "save_pretrained") if callable(getattr(model, name, None))]
    for index, hook in enumerate(cfg.get("custom_hooks") or []):
        kind = _resolve(hook.get("type"), HOOKS) if isinstance(hook, dict) else None
        if not (isinstance(kind, type) and issubclass(kind, ModelFolderCheckpointHook)):
            continue
        save_method = kind(**{k: v for k, v in hook.items() if k not in ("type", "priority")}).save_method
        if not callable(getattr(model, save_method, None)):
            fits = {"save_bridge": "BridgeCheckpointHook", "save_pretrained": "ModelFolderCheckpointHook"}
            use = " or ".join(fits[name] for name in writers) or "no folder hook"
            raise ConfigError(f"custom_hooks.{index}: {kind.__name__} writes its folders with the model's "
                              f"{save_method}(), which {model.__name__} lacks: use {use}")


def _check_clip_grad(clip: Any) -> None:
    """``optim_wrapper.clip_grad``: the options of torch's ``clip_grad_norm_`` (or, with
    ``type='value'``, ``clip_grad_value_``), its bound a number > 0: torch scales the gradients by
    ``max_norm / norm``, so a negative bound turns every step uphill without an error."""
    import torch

    if not isinstance(clip, dict) or not clip:
        raise ConfigError(f"optim_wrapper.clip_grad must be dict(max_norm=...) or None, got {clip!r}")
    kind = clip.get("type", "norm")
    clippers = {"norm": (torch.nn.utils.clip_grad_norm_, "max_norm"),
                "value": (torch.nn.utils.clip_grad_value_, "clip_value")}
    if kind not in clippers:
        raise ConfigError(f"optim_wrapper.clip_grad.type must be 'norm' or 'value', got {kind!r}")
    function, bound = clippers[kind]
    accepted = sorted(set(inspect.signature(function).parameters) - {"parameters"})
    for key in clip:
        if key != "type" and key not in accepted:
            raise ConfigError(f"optim_wrapper.clip_grad.{key}: {function.__name__} has no option {key!r}"
                              f"{_did_you_mean(key, accepted)}; it takes {', '.join(accepted)}")
    value = clip.get(bound)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        raise ConfigError(f"optim_wrapper.clip_grad.{bound} must be a number > 0, got {value!r}")


def check_schedules(cfg: "Config") -> None:
    """Refuse a learning-rate schedule without a span (``begin >= end``), a factor outside (0, 1]
    (an end_factor may be 0), a negative eta_min, or eta_min beside eta_min_ratio: MMEngine refuses
    some of these only after the models load, with messages that name no key, and lets the others
    train nothing or uphill."""
    for where, _, begin, end, _ in _schedule_spans(cfg):
        if end is not None and begin >= end:
            raise ConfigError(f"{where}: begin={begin} is not before end={end}")
    schedulers = cfg.get("param_scheduler") or []
    for index, scheduler in enumerate([schedulers] if isinstance(schedulers, dict) else schedulers):
        if not isinstance(scheduler, dict):
            continue
        for key, (rule, holds) in _SCHEDULE_BOUNDS.items():
            value = scheduler.get(key)
            if isinstance(value, int | float) and not isinstance(value, bool) and not holds(value):
                raise ConfigError(f"param_scheduler.{index}.{key} must be {rule}, got {value}")
        if scheduler.get("eta_min") is not None and scheduler.get("eta_min_ratio") is not None:
            raise ConfigError(f"param_scheduler.{index}: give eta_min or eta_min_ratio, not both")


def schedules_cut_short(cfg: "Config") -> list[str]:
    """A warning for each learning-rate schedule that ``max_iters`` ends early or never reaches: a
    warm-up that never reaches its rate, a decay that never finishes or never starts (meant when a
    run is shortened for a test, or resumed later with more iterations, so not an error)."""
    warnings = []
    for where, name, begin, end, max_iters in _schedule_spans(cfg):
        if begin >= max_iters:
            warnings.append(f"{where}: {name} begins at iteration {begin}, not before "
                            f"train_cfg.max_iters={max_iters}: it never acts in this run")
        elif end is not None and max_iters < end:
            warnings.append(f"{where}: {name} ends at iteration {end}, after train_cfg.max_iters={max_iters}: "
                            f"training stops {max_iters - begin} of its {end - begin} iterations in")
    return warnings


def _schedule_spans(cfg: "Config") -> Iterator[tuple[str, str, int, int | None, int]]:
    """``(key path, type name, begin, end or None, max_iters)`` of each scheduler with whole-number bounds."""
    max_iters = (cfg.get("train_cfg") or {}).get("max_iters")
    schedulers = cfg.get("param_scheduler") or []
    for index, scheduler in enumerate([schedulers] if isinstance(schedulers, dict) else schedulers):
        if not isinstance(scheduler, dict) or not isinstance(max_iters, int):
            continue
        begin, end = scheduler.get("begin", 0), scheduler.get("end")
        if isinstance(begin, int) and (end is None or isinstance(end, int)):  # else check_config reports
            kind = scheduler.get("type")
            yield (f"param_scheduler.{index}", kind if isinstance(kind, str) else _name(kind), begin, end,
                   max_iters)


def check_model_wrapper_scope(cfg: "Config") -> None:
    """MMEngine's Runner looks a model wrapper's ``type`` up in MMEngine's own registry, where a
    diffengine wrapper is found only by its scoped name: say so in one line, not as a TypeError later."""
    from mmengine.registry import MODEL_WRAPPERS

    kind = (cfg.get("model_wrapper_cfg") or {}).get("type")
    if isinstance(kind, str) and "." not in kind and MODEL_WRAPPERS.get(kind) is None:
        raise ConfigError(f"model_wrapper_cfg.type: MMEngine finds {kind!r} only by its scoped name: "
                          f"write 'diffengine.{kind}'")


def _typed_sections(cfg: "Config", registries: dict[str, Any]) -> Iterator[tuple[str, dict, Any, str]]:
    """``(key path, dict with a type, registry, registry name)`` for each section MMEngine builds."""
    def typed(where: str, node: Any, registry_name: str):
        if isinstance(node, dict) and "type" in node:
            yield where, node, registries.get(registry_name), registry_name

    yield from typed("model", cfg.get("model"), "model")
    yield from typed("train_dataloader", cfg.get("train_dataloader"), "function")
    yield from typed("train_cfg", cfg.get("train_cfg"), "loop")
    yield from typed("model_wrapper_cfg", cfg.get("model_wrapper_cfg"), "model_wrapper")
    optim_wrapper = cfg.get("optim_wrapper") or {}
    yield from typed("optim_wrapper", optim_wrapper, "optim_wrapper")
    yield from typed("optim_wrapper.optimizer", optim_wrapper.get("optimizer"), "optimizer")
    for name, hook in (cfg.get("default_hooks") or {}).items():
        yield from typed(f"default_hooks.{name}", hook, "hook")
    for index, hook in enumerate(cfg.get("custom_hooks") or []):
        yield from typed(f"custom_hooks.{index}", hook, "hook")
    schedulers = cfg.get("param_scheduler") or []
    for index, scheduler in enumerate([schedulers] if isinstance(schedulers, dict) else schedulers):
        yield from typed(f"param_scheduler.{index}", scheduler, "param_scheduler")
    visualizer = cfg.get("visualizer") or {}
    yield from typed("visualizer", visualizer, "visualizer")
    for index, backend in enumerate(visualizer.get("vis_backends") or []):
        yield from typed(f"visualizer.vis_backends.{index}", backend, "vis_backend")


def _resolve(kind: Any, registry) -> Any:
    if not isinstance(kind, str):
        return kind
    return registry.get(kind) if registry is not None else None


def _name(target: Any) -> str:
    return getattr(target, "__name__", repr(target))


def _is_checkpoint_hook(target: Any) -> bool:
    from mmengine.hooks import CheckpointHook

    return inspect.isclass(target) and issubclass(target, CheckpointHook)


def _parameters(target: Any) -> tuple[set[str] | None, dict[str, Any]]:
    """Names a class or function accepts (None: anything) and their type hints.

    A class whose ``__init__`` takes ``**kwargs`` passes them on to its base classes, so their
    arguments count too, up to the first ``__init__`` without ``**kwargs``.
    """
    functions = ([klass.__dict__["__init__"] for klass in target.__mro__ if "__init__" in klass.__dict__]
                 if inspect.isclass(target) else [target])
    if _is_checkpoint_hook(target):
        # CheckpointHook hands its **kwargs to Runner.save_checkpoint
        from mmengine.runner import Runner

        functions.insert(1, Runner.save_checkpoint)
    accepted: set[str] = set()
    hints: dict[str, Any] = {}
    for function in functions:
        try:
            parameters = inspect.signature(function).parameters
        except (TypeError, ValueError):
            return None, hints
        try:
            function_hints = typing.get_type_hints(function)
        except Exception:  # unresolvable annotations only lose the type check
            function_hints = {}
        for name, parameter in parameters.items():
            if parameter.kind in (parameter.POSITIONAL_ONLY, parameter.VAR_POSITIONAL) or name == "self":
                continue
            if parameter.kind is not parameter.VAR_KEYWORD:
                accepted.add(name)
                hints.setdefault(name, function_hints.get(name))
        if not any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
            return accepted - _PASSED_BY_RUNNER, hints
        if function is object.__init__:
            break
    return None, hints  # **kwargs all the way up: anything may be accepted


def _default(target: Any, name: str) -> Any:
    """The default of argument ``name`` of a class (its first ``__init__`` naming it) or function."""
    functions = ([klass.__dict__["__init__"] for klass in target.__mro__ if "__init__" in klass.__dict__]
                 if inspect.isclass(target) else [target])
    for function in functions:
        try:
            parameter = inspect.signature(function).parameters.get(name)
        except (TypeError, ValueError):
            return None
        if parameter is not None:
            return None if parameter.default is parameter.empty else parameter.default
    return None


def _is_sequence(hint: Any) -> bool:
    """Whether a hint allows only sequences (and None): a bare string there is a mistake."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        options = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        return bool(options) and all(_is_sequence(arg) for arg in options)
    return typing.get_origin(hint) in (list, tuple, collections.abc.Sequence)


def _allowed_types(hint: Any) -> tuple[type, ...] | None:
    """The basic types a hint allows (None: not a hint this check understands)."""
    if hint in (int, float, bool, str):
        return (int, float) if hint is float else (hint,)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        allowed: list[type] = []
        for arg in typing.get_args(hint):
            if arg is type(None):
                allowed.append(type(None))
                continue
            basic = _allowed_types(arg)
            if basic is None:
                return None
            allowed.extend(basic)
        return tuple(allowed)
    return None


def _check_value(where: str, value: Any, hint: Any, target: Any = None) -> None:
    allowed = _allowed_types(hint)
    if allowed is not None:
        is_bool = isinstance(value, bool)
        if not isinstance(value, allowed) or (is_bool and bool not in allowed):
            names = " or ".join("None" if t is type(None) else t.__name__ for t in allowed)
            raise ConfigError(f"{where} must be {names}, got {value!r}")
    if isinstance(value, str) and _is_sequence(hint):
        raise ConfigError(f"{where} must be a list, got the string {value!r} (write {where}=[{value}])")
    minimum = _MINIMUMS.get(where.rsplit(".", 1)[-1])
    if _is_checkpoint_hook(target) and value == -1:
        minimum = None  # MMEngine's "save only at the end"
    if minimum is not None and isinstance(value, int | float) and not isinstance(value, bool) and value < minimum:
        raise ConfigError(f"{where} must be >= {minimum}, got {value}")


def _did_you_mean(word: str, candidates: list[str]) -> str:
    close = difflib.get_close_matches(word, candidates, n=3, cutoff=0.6)
    return f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""
