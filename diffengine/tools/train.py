"""``diffengine train`` / ``wds_train``: build an MMEngine runner from a config and train.

Run as a module (``python -m diffengine.tools.train``) for torchrun's worker processes.
"""
import argparse
import contextlib
import os
import sys
from pathlib import Path


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared by ``train`` and ``wds_train`` (argparse only: keeps ``--help`` fast)."""
    parser.add_argument("config", help="config file path or packaged config name")
    parser.add_argument("--work-dir", help="where logs, checkpoints, samples and bridges go "
                        "(default: ./work_dirs/CONFIG_NAME)")
    parser.add_argument("--resume", nargs="?", const="auto", default=None, metavar="CHECKPOINT",
                        help="resume from CHECKPOINT, or from the latest one in the work dir")
    parser.add_argument("--amp", action="store_true",
                        help="bfloat16 automatic mixed precision (GPU)")
    parser.add_argument("--cfg-options", nargs="+", default=None, metavar="KEY=VALUE",
                        help="override config entries, MMEngine DictAction syntax, e.g. "
                        "train_cfg.max_iters=10 model.vision_lora.rank=16")
    parser.add_argument("--launcher", choices=["none", "pytorch", "slurm", "mpi"], default="none",
                        help="job launcher (set for you when NPROC_PER_NODE > 1)")


def train_arguments(config: str, *options: str) -> argparse.Namespace:
    """The arguments ``diffengine train CONFIG OPTIONS...`` would parse to (for tools that train)."""
    parser = argparse.ArgumentParser(prog="diffengine train")
    add_train_arguments(parser)
    return parser.parse_args([config, *options])


class ConfigError(ValueError):
    """A config that cannot run the requested command."""


def build_config(args: argparse.Namespace, wds: bool):
    """Load the config and apply the command-line options to it."""
    from mmengine.config import Config, DictAction

    from .config_lookup import resolve_config

    config_path = resolve_config(args.config)
    cfg = Config.fromfile(str(config_path))
    if args.cfg_options:
        options = argparse.Namespace()
        DictAction(option_strings=["--cfg-options"], dest="cfg_options")(
            None, options, args.cfg_options)
        cfg.merge_from_dict(options.cfg_options)
    cfg.launcher = args.launcher
    cfg.work_dir = args.work_dir or cfg.get("work_dir") or str(Path("work_dirs") / config_path.stem)
    if args.resume == "auto":
        cfg.resume, cfg.load_from = True, None
    elif args.resume is not None:
        cfg.resume, cfg.load_from = True, args.resume
    if args.amp:
        cfg.optim_wrapper.type = "AmpOptimWrapper"
        cfg.optim_wrapper.dtype = "bfloat16"
    if wds:
        _check_wds_config(cfg, config_path)
    _add_tensorboard_if_installed(cfg)
    if cfg.get("model", {}).get("hidden_layer", -1) != -1 and "model_wrapper_cfg" in cfg:
        # the LM layers after the bridged one still carry LoRA that gets no gradient
        cfg.model_wrapper_cfg.find_unused_parameters = True
    return cfg


def _add_tensorboard_if_installed(cfg) -> None:
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


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def _check_wds_config(cfg, config_path: Path) -> None:
    """``wds_train`` streams shards: it needs a loader builder and an iteration-based loop."""
    from diffengine.engine.runner import is_loader_builder_cfg

    if not is_loader_builder_cfg(cfg.get("train_dataloader")):
        raise ConfigError(f"{config_path.name}: wds_train needs "
                          "train_dataloader=dict(type=build_wds_dataloader, shards=..., ...)")
    if "max_iters" not in cfg.get("train_cfg", {}):
        raise ConfigError(f"{config_path.name}: wds_train is iteration-based; set "
                          "train_cfg=dict(type=StreamingIterBasedTrainLoop, max_iters=N)")


def prepare_config(args: argparse.Namespace, wds: bool):
    """The checked config: every ``ConfigError`` is raised here, before any process or model starts."""
    from .config_lookup import resolve_config

    resolve_config(args.config)  # an unknown name fails here, before the slow imports
    cfg = build_config(args, wds)
    if args.amp and not _cuda_available():
        raise ConfigError("--amp needs a GPU (MMEngine's AmpOptimWrapper); none is available")
    return cfg


def run(args: argparse.Namespace, wds: bool = False):
    """Train as configured and return the runner; raises on failure (non-zero exit)."""
    cfg = prepare_config(args, wds)
    import diffengine.datasets  # noqa: F401  registers the dataloader builders
    import diffengine.engine  # noqa: F401  registers the checkpoint loader, hooks, wrappers
    import diffengine.models  # noqa: F401
    from diffengine.engine import DiffEngineRunner
    if args.launcher == "pytorch" and not _cuda_available():
        # MMEngine's init_dist calls torch.cuda.set_device unconditionally; on CPU we start the
        # gloo process group ourselves, and MMEngine then uses the existing one
        import torch.distributed as dist
        if not dist.is_initialized():
            dist.init_process_group(backend="gloo")
    runner = DiffEngineRunner.from_cfg(cfg)
    runner.train()
    return runner


def main(argv: list[str] | None = None) -> None:
    """Entry for torchrun workers: ``python -m diffengine.tools.train [--wds] CONFIG ...``."""
    parser = argparse.ArgumentParser(prog="diffengine train")
    add_train_arguments(parser)
    parser.add_argument("--wds", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        run(args, wds=args.wds)
    except BaseException:
        with contextlib.suppress(Exception):  # the training error is the one to report
            _destroy_process_group()
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
