"""``diffengine train`` / ``wds_train``: build an MMEngine runner from a config and train.

Run as a module (``python -m diffengine.tools.train``) for torchrun's worker processes.
"""
import argparse
import contextlib
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from diffengine.errors import (
    INTERRUPTED_STATUS,
    REPORTED_ERRORS,
    SETUP_ERRORS,
    ConfigError,
    TrainingStopped,
    describe_error,
    exit_status,
)
from diffengine.work_dirs import run_outputs, sample_grids_in

from .arguments import add_cfg_options_argument
from .cfg_options import parse_cfg_options
from .data_check import check_model_arguments, check_model_folders, check_shards
from .launch import WORKER_ERROR_FILE_ENV, check_launcher_environment, checks_for_the_job, pass_to_launcher

if TYPE_CHECKING:
    from mmengine.config import Config

    from diffengine.engine import DiffEngineRunner


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared by ``train`` and ``wds_train`` (argparse only: keeps ``--help`` fast)."""
    parser.add_argument("config", help="config file path or packaged config name")
    parser.add_argument("--work-dir", help="where logs, checkpoints, samples and bridges go "
                        "(default: ./work_dirs/CONFIG_NAME)")
    start = parser.add_mutually_exclusive_group()
    start.add_argument("--resume", nargs="?", const="auto", default=None, metavar="CHECKPOINT",
                       help="resume from CHECKPOINT, or from the latest one in the work dir; "
                       "options given now (learning rates, max_iters, ...) apply")
    start.add_argument("--overwrite", action="store_true",
                       help="start afresh in a work dir that holds a previous run (its checkpoints, "
                       "bridges and samples are deleted)")
    parser.add_argument("--amp", action="store_true",
                        help="automatic mixed precision on a GPU: bfloat16, or float16 with loss "
                        "scaling where the GPU lacks bfloat16")
    add_cfg_options_argument(parser, "override config entries (MMEngine DictAction syntax; spaces and quotes "
                             "kept), e.g. train_cfg.max_iters=10 model.vision_lora.rank=16")
    parser.add_argument("--launcher", choices=["none", "pytorch", "slurm", "mpi"], default="none",
                        help="job launcher (set for you when NPROC_PER_NODE > 1)")


def train_arguments(config: str, *options: str) -> argparse.Namespace:
    """The arguments ``diffengine train CONFIG OPTIONS...`` would parse to (for tools that train)."""
    parser = argparse.ArgumentParser(prog="diffengine train")
    add_train_arguments(parser)
    return parser.parse_args([config, *options])


def load_config_file(config_path: Path) -> "Config":
    """``Config.fromfile`` with errors that name the file and line (MMEngine says ``<unknown>``)."""
    import ast

    from mmengine.config import Config

    try:
        if config_path.suffix == ".py":  # MMEngine also reads .json, .yaml and .yml configs
            ast.parse(config_path.read_text(), filename=str(config_path))
    except SyntaxError as error:
        raise ConfigError(f"{config_path}:{error.lineno}: syntax error: {error.msg}") from None
    try:
        return Config.fromfile(str(config_path))
    except Exception as error:  # whatever the config's own code raised
        raise ConfigError(f"{config_path}: {type(error).__name__}: {error}") from error


def _merge_error(cfg: "Config", key: str, error: Exception) -> str:
    """Why ``key`` does not fit ``cfg``: for a list index, how long the list is (MMEngine's
    message prints the whole list)."""
    parts = key.split(".")
    node = cfg.get(parts[0])
    for depth, part in enumerate(parts[1:-1], start=1):
        if isinstance(node, list | tuple):
            if not part.isdigit() or int(part) >= len(node):
                where = ".".join(parts[:depth])
                indices = "index 0" if len(node) == 1 else f"indices 0 to {len(node) - 1}"
                return f"{where} is a list of {len(node)} ({indices}), not {part!r}"
            node = node[int(part)]
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            break
    return str(error)


def build_config(args: argparse.Namespace, wds: bool) -> "Config":
    """Load the config and apply the command-line options to it."""
    from .config_check import check_cfg_options
    from .config_lookup import resolve_config

    config_path = resolve_config(args.config)
    cfg = load_config_file(config_path)
    if args.cfg_options:
        options = parse_cfg_options(args.cfg_options)
        check_cfg_options(cfg, options)
        for key, value in options.items():
            try:
                cfg.merge_from_dict({key: value})
            except (KeyError, IndexError, TypeError, ValueError) as error:
                raise ConfigError(f"--cfg-options {key}: {_merge_error(cfg, key, error)}") from None
    check_launcher_environment(args.launcher)
    cfg.launcher = args.launcher
    cfg.work_dir = args.work_dir or cfg.get("work_dir") or str(Path("work_dirs") / config_path.stem)
    if args.resume is not None:
        cfg.resume, cfg.load_from = True, str(_resume_checkpoint(args.resume, cfg.work_dir, cfg))
    if args.amp:
        # a scoped name: the config holds no class object added after loading (see below)
        cfg.optim_wrapper.type = "diffengine.GuardedAmpOptimWrapper"
        cfg.optim_wrapper.dtype = "auto"
    if wds:
        _check_wds_config(cfg, config_path)
    _add_tensorboard_if_installed(cfg)
    if cfg.get("model", {}).get("hidden_layer", -1) != -1 and "model_wrapper_cfg" in cfg:
        # the LM layers after the bridged one still carry LoRA that gets no gradient
        cfg.model_wrapper_cfg.find_unused_parameters = True
    return cfg


def _resume_checkpoint(resume: str, work_dir: str, cfg: "Config") -> Path:
    """The checkpoint ``--resume [CHECKPOINT]`` names, checked to exist, to be readable and to
    leave iterations to train before ``train_cfg.max_iters``."""
    from diffengine.engine.resume import find_resume_checkpoint
    from diffengine.errors import UnreadableCheckpointError
    from diffengine.models.weights_file import load_local_checkpoint

    if resume != "auto":
        if not Path(resume).is_file():
            raise ConfigError(f"--resume {resume}: no such checkpoint file")
        found = Path(resume)
    else:
        found = find_resume_checkpoint(work_dir)
        if found is None:
            raise ConfigError(f"--resume: {work_dir} holds no checkpoint (iter_N.pth) to resume from; "
                              "drop --resume to start a new run there")
    try:
        # memory-mapped: reads the archive's index and pickled structure, not the tensors
        checkpoint = load_local_checkpoint(str(found), map_location="cpu", mmap=True)
    except UnreadableCheckpointError as error:
        readable = _newest_readable_checkpoint(work_dir, before=found) if resume == "auto" else None
        # never chosen silently: resuming an older one retrains its iterations, which the user decides
        hint = f"; the newest readable one is {readable}: resume it with --resume {readable}" if readable else ""
        raise ConfigError(f"--resume: {error}{hint}") from None
    iteration = (checkpoint.get("meta") or {}).get("iter") if isinstance(checkpoint, dict) else None
    max_iters = (cfg.get("train_cfg") or {}).get("max_iters")
    if isinstance(iteration, int) and isinstance(max_iters, int) and iteration >= max_iters:
        # the loop would start past its end: the models would load, nothing train, and the run exit 0
        raise ConfigError(f"--resume: {found} is at iteration {iteration} and train_cfg.max_iters={max_iters}: "
                          "nothing is left to train; to train further, raise it "
                          "(--cfg-options train_cfg.max_iters=N)")
    return found


def _newest_readable_checkpoint(work_dir: str, before: Path) -> Path | None:
    """The newest ``iter_N.pth`` of ``work_dir`` older than ``before`` that loads (None if none does)."""
    from diffengine.errors import UnreadableCheckpointError
    from diffengine.models.weights_file import load_local_checkpoint
    from diffengine.work_dirs import checkpoint_iteration, checkpoints_in

    newest = checkpoint_iteration(before)
    for candidate in reversed(checkpoints_in(work_dir)):
        if newest is not None and checkpoint_iteration(candidate) >= newest:
            continue
        try:
            load_local_checkpoint(str(candidate), map_location="cpu", mmap=True)
        except UnreadableCheckpointError:
            continue
        return candidate
    return None


def _ignore_vanished(function, path: str, exc_info) -> None:
    """``shutil.rmtree``'s error handler: a file deleted meanwhile is fine, any other error raises."""
    if not issubclass(exc_info[0], FileNotFoundError):
        raise exc_info[1]


def prepare_work_dir(work_dir: str | Path, resume: bool, overwrite: bool) -> None:
    """Refuse a work dir holding another run unless resuming it or ``--overwrite``; check it is writable."""
    work_dir = Path(work_dir)
    previous = run_outputs(work_dir)
    if previous and not resume:
        if not overwrite:
            names = ", ".join(str(path.relative_to(work_dir)) for path in previous[:4])
            raise ConfigError(f"work dir {work_dir} holds a previous run ({names}): add --resume to "
                              "continue it, --overwrite to start over (deletes its checkpoints, "
                              "bridges and samples), or choose another --work-dir")
        # on a work dir shared by several nodes, each node's launcher deletes the same files:
        # whatever another one deleted first is gone already, not an error
        for path in [*previous, *sample_grids_in(work_dir)]:
            if path.is_dir():
                shutil.rmtree(path, onerror=_ignore_vanished)
            else:
                path.unlink(missing_ok=True)
    try:
        work_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=work_dir):
            pass
    except OSError as error:
        raise ConfigError(f"work dir {work_dir} is not writable: {error.strerror or error}") from None


def _add_tensorboard_if_installed(cfg: "Config") -> None:
    """TensorBoard out of the box: log to it too when ``tensorboard`` is installed."""
    import importlib.util

    backends = cfg.get("visualizer", {}).get("vis_backends")
    if backends is None or importlib.util.find_spec("tensorboard") is None:
        return
    names = {getattr(b["type"], "__name__", b["type"]) for b in backends}
    if "TensorboardVisBackend" not in names:
        # a registry name, not the class: MMEngine cannot print a config holding a class object
        # added after loading (Runner logs the config, so training would stop there)
        backends.append(dict(type="TensorboardVisBackend"))


def _registries() -> dict:
    """The registries string ``type`` names of each config section are looked up in."""
    import diffengine.datasets  # noqa: F401  registers the dataloader builders
    import diffengine.engine  # noqa: F401  registers the hooks, loops, wrappers
    import diffengine.models  # noqa: F401
    from diffengine import registry

    return {"model": registry.MODELS, "function": registry.FUNCTIONS, "loop": registry.LOOPS,
            "model_wrapper": registry.MODEL_WRAPPERS, "optim_wrapper": registry.OPTIM_WRAPPERS,
            "optimizer": registry.OPTIMIZERS, "hook": registry.HOOKS,
            "param_scheduler": registry.PARAM_SCHEDULERS, "visualizer": registry.VISUALIZERS,
            "vis_backend": registry.VISBACKENDS}


def _wrapper_name(cfg: "Config") -> str:
    """The class name of the config's optimizer wrapper (a class, or a plain or scoped name)."""
    wrapper = cfg.get("optim_wrapper", {}).get("type")
    return (wrapper if isinstance(wrapper, str) else getattr(wrapper, "__name__", "")).split(".")[-1]


def _mixed_precision(cfg: "Config") -> str | None:
    """The name of the config's optimizer wrapper if it is MMEngine's AmpOptimWrapper or ours."""
    name = _wrapper_name(cfg)
    return name if name in ("AmpOptimWrapper", "GuardedAmpOptimWrapper") else None


def _check_float16_loss_scaling(cfg: "Config") -> None:
    """Frozen float16 weights need the mixed-precision wrapper's loss scaling: the gradients that
    flow back through their float16 activations to the LoRA and the adapter are small (an MSE over
    a latent batch), and below float16's range they lose precision or become 0, without an error."""
    from diffengine.precision import weight_dtype_name

    model = cfg.get("model")
    requested = model.get("weight_dtype") if isinstance(model, dict) else None
    if not isinstance(requested, str) or _mixed_precision(cfg) or weight_dtype_name(requested) != "float16":
        return
    which = "float16" if requested == "float16" else f"{requested}, float16 on this GPU,"
    raise ConfigError(f"model.weight_dtype={which} needs loss scaling, which optim_wrapper.type="
                      f"{_wrapper_name(cfg)} lacks (gradients through float16 activations underflow "
                      "without an error): add --amp (GuardedAmpOptimWrapper's GradScaler), or set "
                      "model.weight_dtype=bfloat16 or float32")


def check_process_count(nproc: int) -> None:
    """On a machine with CUDA, ``NPROC_PER_NODE`` must not exceed the visible devices: each process
    takes the device of its local rank, and one past them fails with a traceback per worker."""
    if nproc > 1 and _cuda_available():
        import torch

        count = torch.cuda.device_count()
        if nproc > count:
            raise ConfigError(f"environment variable NPROC_PER_NODE={nproc}: this machine shows {count} CUDA "
                              f"device(s) (CUDA_VISIBLE_DEVICES decides which), one per process: set "
                              f"NPROC_PER_NODE={count} or less")


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def _check_wds_config(cfg: "Config", config_path: Path) -> None:
    """``wds_train`` streams shards: it needs a loader builder and an iteration-based loop."""
    from diffengine.engine.runner import is_loader_builder_cfg

    if not is_loader_builder_cfg(cfg.get("train_dataloader")):
        raise ConfigError(f"{config_path.name}: wds_train needs "
                          "train_dataloader=dict(type=build_wds_dataloader, shards=..., ...)")
    if "max_iters" not in cfg.get("train_cfg", {}):
        raise ConfigError(f"{config_path.name}: wds_train is iteration-based; set "
                          "train_cfg=dict(type=StreamingIterBasedTrainLoop, max_iters=N)")


def check_resolved_config(cfg: "Config") -> None:
    """Every check of a resolved config that reads no file: types, options, values, counting."""
    from .config_check import (
        check_config,
        check_epoch_counting,
        check_model_folder_hooks,
        check_model_wrapper_scope,
        check_plain_sections,
        check_schedules,
        check_training_values,
    )

    registries = _registries()
    check_config(cfg, registries)
    check_epoch_counting(cfg, registries)
    check_model_wrapper_scope(cfg)
    check_plain_sections(cfg)
    check_training_values(cfg)
    check_schedules(cfg)
    check_model_folder_hooks(cfg)


def prepare_config(args: argparse.Namespace, wds: bool) -> tuple["Config", list[str]]:
    """The checked config, and the warnings to log: every ``ConfigError`` is raised here, before any
    process or model starts."""
    from .config_lookup import resolve_config

    resolve_config(args.config)  # an unknown name fails here, before the slow imports
    cfg = build_config(args, wds)
    check_resolved_config(cfg)
    check_model_folders(cfg)
    # the machine before the model options: a CPU user of a mixed-precision config learns that first
    if _mixed_precision(cfg) and not _cuda_available():
        how = "--amp" if args.amp else f"{args.config} (optim_wrapper.type={_mixed_precision(cfg)})"
        raise ConfigError(f"{how} trains in mixed precision, which needs a GPU (MMEngine's "
                          "AmpOptimWrapper); none is available. On a CPU: drop --amp, or add "
                          "--cfg-options optim_wrapper.type=GuardedOptimWrapper")
    _check_float16_loss_scaling(cfg)
    check_model_arguments(cfg)
    warnings = check_shards(cfg)
    if checks_for_the_job():
        prepare_work_dir(cfg.work_dir, resume=bool(cfg.get("resume")), overwrite=args.overwrite)
    return cfg, warnings


def run(args: argparse.Namespace, wds: bool = False) -> "DiffEngineRunner":
    """Train as configured and return the runner; raises on failure (non-zero exit)."""
    cfg, warnings = prepare_config(args, wds)  # its config check has imported (registered) the package's parts
    from diffengine.engine import DiffEngineRunner

    from .config_check import schedules_cut_short
    if args.launcher == "pytorch" and not _cuda_available():
        # MMEngine's init_dist calls torch.cuda.set_device unconditionally; on CPU we start the
        # gloo process group ourselves, and MMEngine then uses the existing one
        import torch.distributed as dist
        if not dist.is_initialized():
            dist.init_process_group(backend="gloo")
    try:
        runner = DiffEngineRunner.from_cfg(cfg)
    except SETUP_ERRORS as error:
        raise ConfigError(describe_error(error)) from error
    _log_warnings([*warnings, *schedules_cut_short(cfg)])
    try:
        runner.train()
    except SETUP_ERRORS as error:
        loop = runner._train_loop
        if getattr(loop, "started", not isinstance(loop, dict)):
            raise  # an error during training is not about the inputs: keep its traceback
        raise ConfigError(describe_error(error)) from error
    loop = runner.train_loop
    if getattr(loop, "stopped_by", 0) and loop.iter < loop.max_iters:
        raise TrainingStopped(stop_message(runner), loop.stopped_by)
    return runner


def stop_message(runner: "DiffEngineRunner") -> str:
    """What a run stopped by a signal saved, and how to go on."""
    import signal

    loop = runner.train_loop
    saved = (f"saved {loop.stop_checkpoint}; continue with --resume" if loop.stop_checkpoint
             else "nothing saved (the config has no checkpoint hook)")
    name = signal.Signals(loop.stopped_by).name
    return f"training stopped by {name} after iteration {loop.iter} of {loop.max_iters}: {saved}"


def _log_warnings(warnings: list[str]) -> None:
    """Into the run's log (the work dir's and the console), as MMEngine logs its own warnings."""
    import logging

    from mmengine.logging import print_log

    for warning in warnings:
        print_log(warning, logger="current", level=logging.WARNING)


def main(argv: list[str] | None = None) -> None:
    """Entry for torchrun workers: ``python -m diffengine.tools.train [--wds] CONFIG ...``."""
    parser = argparse.ArgumentParser(prog="diffengine train")
    add_train_arguments(parser)
    parser.add_argument("--wds", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        run(args, wds=args.wds)
    except BaseException as error:
        with contextlib.suppress(Exception):  # the training error is the one to report
            _destroy_process_group()
        if isinstance(error, REPORTED_ERRORS) and WORKER_ERROR_FILE_ENV in os.environ:
            pass_to_launcher(error)
            sys.exit(exit_status(error))
        if isinstance(error, KeyboardInterrupt) and WORKER_ERROR_FILE_ENV in os.environ:
            sys.exit(INTERRUPTED_STATUS)  # Ctrl-C: the launcher says so once, not a traceback per worker
        raise
    _destroy_process_group()


def _destroy_process_group() -> None:
    """Tear the process group down before the interpreter exits.

    Gloo's worker threads otherwise outlive Python's finalization and abort the process (SIGABRT,
    "terminate called without an active exception") after a successful run.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1:])
