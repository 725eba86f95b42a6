"""The ``diffengine`` command line. Heavy libraries are imported only by the command that runs."""
import argparse
import os
import shutil
import subprocess
import sys

from .tools.bench import add_bench_arguments
from .tools.convert_official import add_convert_official_arguments
from .tools.eval import add_eval_arguments
from .tools.export import add_export_arguments
from .tools.infer import add_infer_arguments
from .tools.prep_latents import add_prep_latents_arguments
from .tools.prep_wds import add_prep_wds_arguments
from .tools.shapesbench import add_shapesbench_arguments
from .tools.train import WORK_DIR_CHECKED_ENV, WORKER_ERROR_FILE_ENV, add_train_arguments


def torchrun_command(argv: list[str], nproc: int, env: dict[str, str]) -> list[str]:
    """The torchrun command line of a training command, from ``NNODES``, ``NODE_RANK``,
    ``MASTER_ADDR`` and ``MASTER_PORT`` in ``env``.

    One node without a ``MASTER_PORT`` runs standalone (torchrun picks a free port), so that
    two jobs on one machine do not collide on a fixed port.
    """
    if env.get("NNODES", "1").strip() in ("", "1") and "MASTER_PORT" not in env:
        rendezvous = ["--standalone"]
    else:
        rendezvous = [f"--nnodes={env.get('NNODES', '1')}", f"--node_rank={env.get('NODE_RANK', '0')}",
                      f"--master_addr={env.get('MASTER_ADDR', '127.0.0.1')}",
                      f"--master_port={env.get('MASTER_PORT', '29500')}"]
    return [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", *rendezvous,
            "-m", "diffengine.tools.train", *argv, "--launcher", "pytorch"]


def _launch_workers(argv: list[str], nproc: int, report_errors: bool = True) -> int:
    """Re-run this training command under torchrun with one process per device; with
    ``report_errors``, a worker stopped by a user input error is reported here in one line (exit 2),
    else (``--debug``) each worker prints its traceback."""
    import tempfile

    from .errors import ConfigError

    with tempfile.TemporaryDirectory(prefix="diffengine_workers_") as folder:
        error_file = os.path.join(folder, "error")
        env = {**os.environ, WORK_DIR_CHECKED_ENV: "1"}
        if report_errors:
            env[WORKER_ERROR_FILE_ENV] = error_file
        code = subprocess.call(torchrun_command(argv, nproc, dict(os.environ)), env=env)
        if code and os.path.isfile(error_file):
            with open(error_file) as file:
                raise ConfigError(file.read())
    return code


def _processes_per_node() -> int:
    """``NPROC_PER_NODE`` (default 1), checked."""
    from .errors import ConfigError

    text = os.environ.get("NPROC_PER_NODE", "").strip() or "1"
    if not text.isdigit() or int(text) < 1:
        raise ConfigError(f"environment variable NPROC_PER_NODE={text!r}: expected a whole number >= 1 "
                          "(processes per node, one per GPU)")
    return int(text)


def _train(args: argparse.Namespace, argv: list[str], wds: bool) -> int:
    nproc = _processes_per_node()
    nodes = os.environ.get("NNODES", "1").strip()
    # one process on each of several nodes is distributed too: training in-process would run
    # independent copies
    if (nproc > 1 or nodes not in ("", "1")) and args.launcher == "none":
        from .tools.train import prepare_config

        prepare_config(args, wds)  # one clear error here rather than one traceback per worker
        return _launch_workers([*argv, "--wds"] if wds else argv, nproc, report_errors=not args.debug)
    from .tools.train import run

    run(args, wds=wds)
    return 0


def _demo(args: argparse.Namespace) -> int:
    import time

    from .constants import BRIDGE_FOLDER, SAMPLES_FOLDER
    from .errors import ConfigError
    from .tools.demo_assets import make_demo_assets
    from .tools.train import run, train_arguments
    from .work_dirs import run_outputs

    if run_outputs(args.work_dir) and not args.overwrite:
        raise ConfigError(f"{args.work_dir} holds an earlier demo run: add --overwrite to replace it, "
                          "or choose another --work-dir")
    start = time.perf_counter()
    # absolute: the bridge manifest records these paths for `diffengine infer` from anywhere
    data = make_demo_assets(args.data_dir).resolve()
    train_args = train_arguments(
        "lavi_bridge_demo", "--work-dir", args.work_dir, *(["--overwrite"] if args.overwrite else []),
        "--cfg-options",
        f"model.text_encoder={data / 't5'}", f"model.vision_model={data / 'stage1'}",
        f"train_dataloader.shards={data}/shards/{{00000..00001}}.tar", *(args.cfg_options or []))
    runner = run(train_args, wds=True)
    loss = runner.message_hub.get_scalar("train/loss")
    print(f"demo finished in {time.perf_counter() - start:.0f} s; loss {loss.data[0][0]:.4f} at the "
          f"first logged iteration, {loss.mean(20):.4f} over the last 20 iterations")
    print("  ShapesBench judge on held-out prompts (colour / shape / background / all three):")
    for when, key in (("before", "shapesbench_before"), ("after", "shapesbench")):
        print(f"    {when:6s} training: " + "; ".join(
            f"{set_name.replace('_', ' ')} " + " / ".join(
                f"{100 * scores[name]['mean']:.0f} %" for name in ("color", "shape", "background", "all"))
            for set_name, scores in runner.message_hub.get_info(key).items()))
    print(f"  samples:    {runner.work_dir}/{SAMPLES_FOLDER}/\n"
          f"  bridge:     {runner.work_dir}/{BRIDGE_FOLDER}/ (LoRA + adapter safetensors)\n"
          f"  checkpoint: {runner.work_dir}/iter_*.pth")
    return 0


def _list_cfg(args: argparse.Namespace) -> int:
    from .tools.config_lookup import configs_root, list_configs

    root = configs_root()
    for name, path in list_configs(args.pattern).items():
        print(f"{name:40s} {path.relative_to(root)}")
    return 0


def _copy_cfg(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .errors import ConfigError
    from .tools.config_lookup import configs_root, resolve_config

    source = resolve_config(args.name)
    root = configs_root()
    dest_root = Path(args.dest)
    if not source.is_relative_to(root):
        copies = {source: dest_root / source.name}
    else:
        # pure-Python configs import _base_ parts and sibling configs relatively: copy those along
        copies = {path: dest_root / path.relative_to(root)
                  for folder in {Path("_base_"), source.relative_to(root).parent}
                  for path in (root / folder).rglob("*.py")}
    existing = [dest for src, dest in copies.items()
                if dest.exists() and dest.read_bytes() != src.read_bytes()]
    if existing and not args.overwrite:
        raise ConfigError(f"{len(existing)} file(s) in {dest_root} differ from the packaged ones, e.g. "
                          f"{existing[0]}: not overwriting your edits (--overwrite replaces them)")
    for src, dest in copies.items():
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest)
    print(f"copied {source.name} to {copies.get(source, dest_root / source.name)}")
    return 0


def _infer(args: argparse.Namespace) -> int:
    from .tools.infer import run_infer

    run_infer(args)
    return 0


def _eval(args: argparse.Namespace) -> int:
    from .tools.eval import run_eval

    run_eval(args)
    return 0


def _convert_official(args: argparse.Namespace) -> int:
    from .tools.convert_official import run_convert_official

    run_convert_official(args)
    return 0


def _export(args: argparse.Namespace) -> int:
    from .tools.export import run_export

    run_export(args)
    return 0


def _prep_wds(args: argparse.Namespace) -> int:
    from .tools.prep_wds import run_prep_wds

    return run_prep_wds(args)


def _prep_latents(args: argparse.Namespace) -> int:
    from .tools.prep_latents import run_prep_latents

    return run_prep_latents(args)


def _bench(args: argparse.Namespace, argv: list[str]) -> int:
    from .tools.bench import run_bench

    return run_bench(args, ["diffengine", *argv])


def _shapesbench(args: argparse.Namespace) -> int:
    from .tools.shapesbench import run_shapesbench

    run_shapesbench(args)
    return 0


def _version(_: argparse.Namespace) -> int:
    from .version import __version__

    print(__version__)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``diffengine`` argument parser with all subcommands."""
    parser = argparse.ArgumentParser(
        prog="diffengine", description="Config-driven training for text-to-image diffusion "
        "(LaVi-Bridge). Multi-process: NPROC_PER_NODE=N [NNODES NODE_RANK MASTER_ADDR MASTER_PORT] "
        "diffengine train CONFIG.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true",
                        help="show the full traceback of an error instead of its one-line message")

    def command(name: str, **kwargs) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=[common], **kwargs)

    train = command("train", help="train from a config")
    add_train_arguments(train)
    wds_train = command("wds_train", help="train from webdataset shards (iteration-based)")
    add_train_arguments(wds_train)
    demo = command("demo", help="offline demo: tiny models + synthetic shards, then train")
    demo.add_argument("--data-dir", default="data/demo", help="where the demo assets are written")
    demo.add_argument("--work-dir", default="work_dirs/lavi_bridge_demo")
    demo.add_argument("--overwrite", action="store_true", help="replace an earlier demo run's outputs")
    demo.add_argument("--cfg-options", nargs="+", default=None, metavar="KEY=VALUE")
    infer = command("infer", help="generate images from a trained bridge")
    add_infer_arguments(infer)
    evaluate = command("eval", help="score a bridge on ShapesBench or by CLIP score")
    add_eval_arguments(evaluate)
    export = command("export", help="export a bridge as a diffusers pipeline folder "
                     "(LaViBridgePipeline.from_pretrained loads it)")
    add_export_arguments(export)
    convert = command("convert-official",
                      help="convert the paper authors' released weights to a bridge folder")
    add_convert_official_arguments(convert)
    prep_wds = command("prep-wds", help="write webdataset shards (img2dataset layout) from "
                       "an annotation file or an image folder")
    add_prep_wds_arguments(prep_wds)
    prep_latents = command("prep-latents", help="encode image shards with the frozen VAE into latent "
                           "shards, to train without the VAE encoder")
    add_prep_latents_arguments(prep_latents)
    bench = command("bench", help="training speed: diffengine vs a plain PyTorch loop (cpu), FLOPs per "
                    "sample (flops), samples/s, memory and MFU (gpu); a table and a JSON file")
    add_bench_arguments(bench)
    shapesbench = command("shapesbench", help="measure whether trained bridges follow the "
                          "text (ShapesBench), or train its stage-1 model")
    add_shapesbench_arguments(shapesbench)
    list_cfg = command("list-cfg", help="list the packaged configs")
    list_cfg.add_argument("-p", "--pattern", help="only names containing PATTERN")
    copy_cfg = command("copy-cfg", help="copy a packaged config (and its _base_) to DIR")
    copy_cfg.add_argument("name")
    copy_cfg.add_argument("dest", metavar="DIR")
    copy_cfg.add_argument("--overwrite", action="store_true",
                          help="replace files in DIR that differ from the packaged ones")
    command("version", help="print the diffengine version")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the ``diffengine`` command; returns the process exit code.

    A mistake in what the user gave (config, option, environment variable, file) is one line
    on stderr and exit status 2; a run stopped by non-finite training is one line and status 1.
    ``--debug`` shows their tracebacks instead.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    from .errors import ConfigError, NonFiniteTrainingError, NoUsableSampleError, one_line
    from .tools.config_lookup import UnknownConfigError

    # training: ConfigError covers its user mistakes (train.run turns setup errors into it), so a
    # ValueError raised while training keeps its traceback. The other commands read files the
    # user names: their ValueError / FileNotFoundError / NotImplementedError are for the user.
    input_errors = (ValueError, FileNotFoundError, NotImplementedError)
    worker_argv = [arg for arg in argv[1:] if arg != "--debug"]
    commands = {
        "train": (lambda a: _train(a, worker_argv, wds=False), ()),
        "wds_train": (lambda a: _train(a, worker_argv, wds=True), ()),
        "demo": (_demo, ()), "infer": (_infer, input_errors), "export": (_export, input_errors),
        "eval": (_eval, input_errors),
        "convert-official": (_convert_official, input_errors), "prep-wds": (_prep_wds, input_errors),
        "prep-latents": (_prep_latents, input_errors),
        "shapesbench": (_shapesbench, input_errors), "bench": (lambda a: _bench(a, argv), input_errors),
        "list-cfg": (_list_cfg, ()), "copy-cfg": (_copy_cfg, ()), "version": (_version, ()),
    }
    command, user_errors = commands[args.command]
    try:
        return command(args)
    except (UnknownConfigError, ConfigError, NonFiniteTrainingError, NoUsableSampleError, *user_errors) as error:
        if args.debug:
            raise
        print(f"diffengine: error: {one_line(error)}", file=sys.stderr)
        return 1 if isinstance(error, NonFiniteTrainingError) else 2


def cli() -> None:
    """Console-script entry."""
    sys.exit(main())
