"""The ``diffengine`` command line. Heavy libraries are imported only by the command that runs."""
import argparse
import sys

from .tools.arguments import add_cfg_options_argument
from .tools.bench import add_bench_arguments
from .tools.convert_official import add_convert_official_arguments
from .tools.eval import add_eval_arguments
from .tools.export import add_export_arguments
from .tools.infer import add_infer_arguments
from .tools.launch import check_node_environment, launch_workers, processes_per_node, several_nodes
from .tools.prep_latents import add_prep_latents_arguments
from .tools.prep_wds import add_prep_wds_arguments
from .tools.shapesbench import add_shapesbench_arguments
from .tools.train import add_train_arguments


def _train(args: argparse.Namespace, argv: list[str], wds: bool) -> int:
    nproc = processes_per_node()
    # one process on each of several nodes is distributed too: training in-process would run
    # independent copies
    if (nproc > 1 or several_nodes()) and args.launcher == "none":
        from .tools.train import check_process_count, prepare_config

        check_node_environment()
        check_process_count(nproc)
        # one clear error here rather than one traceback per worker; the workers do not check the
        # shards again, so their warnings are said here
        for warning in prepare_config(args, wds)[1]:
            print(f"diffengine: warning: {warning}", file=sys.stderr)
        return launch_workers([*argv, "--wds"] if wds else argv, nproc, report_errors=not args.debug)
    from .tools.train import run

    run(args, wds=wds)
    return 0


def _demo(args: argparse.Namespace) -> int:
    from .tools.demo import run_demo

    run_demo(args)
    return 0


def _list_cfg(args: argparse.Namespace) -> int:
    from .tools.config_lookup import configs_root, list_configs

    root = configs_root()
    found = list_configs(args.pattern)
    if not found:  # as grep: nothing matched is exit code 1, said on stderr
        print(f"diffengine: no packaged config name contains {args.pattern!r} (list-cfg lists them all)",
              file=sys.stderr)
        return 1
    for name, path in found.items():
        print(f"{name:40s} {path.relative_to(root)}")
    return 0


def _copy_cfg(args: argparse.Namespace) -> int:
    from .tools.config_lookup import copy_config

    source, dest = copy_config(args.name, args.dest, args.overwrite)
    print(f"copied {source.name} to {dest}")
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
    add_cfg_options_argument(demo, "override the demo config's entries, as in `diffengine train`")
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
    on stderr and exit status 2; a run stopped by non-finite training is one line and status 1,
    one stopped by SIGTERM (after saving a checkpoint) one line and status 143.
    ``--debug`` shows their tracebacks instead.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    from .errors import INTERRUPTED_STATUS, REPORTED_ERRORS, ModelFolderError, exit_status, report_line
    from .tools.config_lookup import UnknownConfigError

    # training: ConfigError covers its user mistakes (train.run turns setup errors into it), so a
    # ValueError raised while training keeps its traceback. The other commands read files the
    # user names: their ValueError / NotImplementedError and errors of those paths are for the user,
    # and so is the OSError without an errno that from_pretrained raises for a model folder that
    # lacks or has broken files (a full disk or a broken pipe has one, and keeps its traceback).
    path_errors = (FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError, PermissionError)
    input_errors = (ValueError, NotImplementedError, *path_errors, ModelFolderError)
    worker_argv = [arg for arg in argv[1:] if arg != "--debug"]
    commands = {
        "train": (lambda a: _train(a, worker_argv, wds=False), ()),
        "wds_train": (lambda a: _train(a, worker_argv, wds=True), ()),
        "demo": (_demo, path_errors), "infer": (_infer, input_errors), "export": (_export, input_errors),
        "eval": (_eval, input_errors),
        "convert-official": (_convert_official, input_errors), "prep-wds": (_prep_wds, input_errors),
        "prep-latents": (_prep_latents, input_errors),
        "shapesbench": (_shapesbench, input_errors), "bench": (lambda a: _bench(a, argv), input_errors),
        "list-cfg": (_list_cfg, ()), "copy-cfg": (_copy_cfg, path_errors), "version": (_version, ()),
    }
    command, user_errors = commands[args.command]
    try:
        try:
            return command(args)
        except OSError as error:
            if ModelFolderError in user_errors and error.errno is None and not isinstance(error, path_errors):
                raise ModelFolderError(str(error)) from error
            raise
    except (UnknownConfigError, *REPORTED_ERRORS, *user_errors) as error:
        if args.debug:
            raise
        print(report_line(error), file=sys.stderr)
        return exit_status(error)
    except KeyboardInterrupt:
        if args.debug:
            raise
        resume = ("; a training run continues from its last checkpoint with --resume"
                  if args.command in ("train", "wds_train", "demo") else "")
        print(f"diffengine: interrupted (Ctrl-C){resume}", file=sys.stderr)
        return INTERRUPTED_STATUS


def cli() -> None:
    """Console-script entry."""
    sys.exit(main())
