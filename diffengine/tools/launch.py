"""How a training command spreads over processes and nodes: the launch environment and torchrun.

``NPROC_PER_NODE`` processes per node (one per GPU) and ``NNODES``, ``NODE_RANK``,
``MASTER_ADDR``, ``MASTER_PORT`` for several nodes. The launching process checks the config and
the work dir once, then starts the workers under torchrun and passes a SIGTERM on to them; a
worker stopped by a reported error (a user input error, non-finite training, SIGTERM) writes its
exit status and one-line message to a file the launcher reports. Import-free beyond the standard
library, so the CLI starts fast.
"""
import contextlib
import errno
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time

from diffengine.errors import ConfigError, error_of_status, exit_status, one_line

# set by the launching process for the workers it starts: it has checked the work dir already
WORK_DIR_CHECKED_ENV = "DIFFENGINE_WORK_DIR_CHECKED"
# set by the launching process: the file where the first worker stopped by a reported error (a
# user input error, non-finite training, a stop signal) writes its exit status and one-line
# message, for the launcher to report once instead of one traceback each
WORKER_ERROR_FILE_ENV = "DIFFENGINE_WORKER_ERROR_FILE"


def processes_per_node() -> int:
    """``NPROC_PER_NODE`` (default 1), checked."""
    text = os.environ.get("NPROC_PER_NODE", "").strip() or "1"
    if not text.isdigit() or int(text) < 1:
        raise ConfigError(f"environment variable NPROC_PER_NODE={text!r}: expected a whole number >= 1 "
                          "(processes per node, one per GPU)")
    return int(text)


def check_node_environment() -> None:
    """Raise ConfigError for an ``NNODES``, ``NODE_RANK`` or ``MASTER_PORT`` that torchrun would refuse
    with a traceback, or wait on forever (a node rank past the node count, a node other than 0
    without ``MASTER_ADDR``), and for a ``MASTER_PORT`` that is in use where this node serves the
    rendezvous (node 0)."""
    nodes = os.environ.get("NNODES", "").strip() or "1"
    counts = re.fullmatch(r"([0-9]+)(?::([0-9]+))?", nodes)
    if not counts or int(counts[1]) < 1 or int(counts[2] or counts[1]) < int(counts[1]):
        raise ConfigError(f"environment variable NNODES={nodes!r}: expected a whole number >= 1 (nodes), or an "
                          "elastic range MIN:MAX")
    most = int(counts[2] or counts[1])
    rank = os.environ.get("NODE_RANK", "").strip() or "0"
    if not re.fullmatch("[0-9]+", rank) or int(rank) >= most:
        raise ConfigError(f"environment variable NODE_RANK={rank!r}: expected a whole number from 0 to {most - 1} "
                          f"(this node's place among NNODES={nodes})")
    if most > 1 and int(rank) > 0 and not os.environ.get("MASTER_ADDR", "").strip():
        raise ConfigError(f"environment variable MASTER_ADDR is not set: NODE_RANK={rank} of NNODES={nodes} needs "
                          "node 0's address (without it, this node would wait for node 0 on its own machine "
                          "until the rendezvous times out)")
    port = os.environ.get("MASTER_PORT", "").strip()
    if port and (not re.fullmatch("[0-9]+", port) or not 1 <= int(port) <= 65535):
        raise ConfigError(f"environment variable MASTER_PORT={port!r}: expected a port number from 1 to 65535")
    refusal = _listen_refusal(int(port)) if port and int(rank) == 0 else None
    if refusal is not None:
        raise ConfigError(f"environment variable MASTER_PORT={port}: {refusal} on this machine, where node 0 "
                          "serves the rendezvous: choose a free port")


def _listen_refusal(port: int) -> str | None:
    """Why no socket can listen on ``port`` here, as torchrun's rendezvous store would (reusing a
    closed one's), or None when one can."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("", port))
        except OSError as error:
            return ("the port is in use (another job?)" if error.errno == errno.EADDRINUSE
                    else f"the port cannot be opened ({error.strerror})")
    return None


def several_nodes() -> bool:
    """True when ``NNODES`` names more than one node (a fixed count, or an elastic range)."""
    return os.environ.get("NNODES", "1").strip() not in ("", "1")


def planned_world_size() -> int:
    """The processes that will read shards: WORLD_SIZE in a worker, else what the launcher starts
    (NPROC_PER_NODE x NNODES, a fixed node count; an elastic range counts as 1)."""
    if os.environ.get("WORLD_SIZE", "").isdigit():
        return int(os.environ["WORLD_SIZE"])
    nodes = os.environ.get("NNODES", "1").strip()
    return processes_per_node() * (int(nodes) if nodes.isdigit() else 1)


# what MMEngine's init_dist reads for each --launcher (it raises a bare KeyError without them)
LAUNCHER_ENVIRONMENT = {
    "pytorch": ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"),
    "slurm": ("SLURM_PROCID", "SLURM_NTASKS", "SLURM_NODELIST"),
    "mpi": ("OMPI_COMM_WORLD_LOCAL_RANK", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "MASTER_ADDR"),
}


def check_launcher_environment(launcher: str) -> None:
    """Raise ConfigError when ``--launcher`` runs outside the launcher that sets its variables, or
    when a process started without one finds a rank or world size in its environment: the shard
    loader would read only that rank's share of the data, silently (a variable left over from
    another job, or torchrun without ``--launcher pytorch``)."""
    if launcher == "none":
        for name, alone in (("WORLD_SIZE", "1"), ("RANK", "0")):
            value = os.environ.get(name, alone).strip()
            if value not in ("", alone):
                raise ConfigError(f"environment variable {name}={value}, but this process was started without a "
                                  "launcher: unset it, add --launcher pytorch under torchrun, or set "
                                  "NPROC_PER_NODE to train on several devices")
    missing = [name for name in LAUNCHER_ENVIRONMENT.get(launcher, ()) if name not in os.environ]
    if missing:
        raise ConfigError(f"--launcher {launcher} needs the environment its launcher sets ({', '.join(missing)} "
                          "missing): start the command under it (torchrun, srun, mpirun), or drop --launcher "
                          "and set NPROC_PER_NODE to train on several devices")


def checks_for_the_job() -> bool:
    """True in the one process per job that checks and prepares what every rank shares (the work dir,
    every shard's kind): the launcher of the workers (one per node), else global rank 0 (slurm, mpi,
    torchrun started by hand)."""
    rank = next((os.environ[k] for k in ("RANK", "SLURM_PROCID", "OMPI_COMM_WORLD_RANK") if k in os.environ), "0")
    return WORK_DIR_CHECKED_ENV not in os.environ and rank == "0"


def torchrun_command(argv: list[str], nproc: int, env: dict[str, str]) -> list[str]:
    """The torchrun command line of a training command, from ``NNODES``, ``NODE_RANK``,
    ``MASTER_ADDR`` and ``MASTER_PORT`` in ``env``.

    One node without a ``MASTER_PORT`` runs standalone (torchrun picks a free port), so that
    two jobs on one machine do not collide on a fixed port.
    """
    # an empty variable is an unset one, as check_node_environment reads them
    nodes, rank, address, port = (env.get(name, "").strip() or default for name, default in (
        ("NNODES", "1"), ("NODE_RANK", "0"), ("MASTER_ADDR", "127.0.0.1"), ("MASTER_PORT", "")))
    if nodes == "1" and not port:
        rendezvous = ["--standalone"]
    else:
        rendezvous = [f"--nnodes={nodes}", f"--node_rank={rank}", f"--master_addr={address}",
                      f"--master_port={port or '29500'}"]
    return [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", *rendezvous,
            "-m", "diffengine.tools.train", *argv, "--launcher", "pytorch"]


def pass_to_launcher(error: BaseException) -> None:
    """In a worker: write ``error`` to the launcher's error file, unless another worker did first."""
    target = os.environ[WORKER_ERROR_FILE_ENV]
    draft = f"{target}.{os.getpid()}"
    # the launcher may be gone (its folder with it): the worker still exits with the error's status
    with contextlib.suppress(OSError):
        with open(draft, "w") as file:
            file.write(f"{exit_status(error)}\n{one_line(error)}")
        try:
            os.link(draft, target)  # whole and first, or not at all: the first worker's message is kept
        finally:
            os.unlink(draft)


def launch_workers(argv: list[str], nproc: int, report_errors: bool = True) -> int:
    """Re-run this training command under torchrun with one process per device; with
    ``report_errors``, a worker stopped by a reported error (a user input error, non-finite
    training, SIGTERM) is reported here in one line with its exit status, else (``--debug``) each
    worker prints its traceback."""
    with tempfile.TemporaryDirectory(prefix="diffengine_workers_") as folder:
        error_file = os.path.join(folder, "error")
        env = {**os.environ, WORK_DIR_CHECKED_ENV: "1"}
        if report_errors:
            env[WORKER_ERROR_FILE_ENV] = error_file
        code, stopped = _run_passing_on_sigterm(torchrun_command(argv, nproc, dict(os.environ)), env)
        if code and stopped and report_errors:
            _wait_for(error_file, STOP_REPORT_WAIT_S)
        if code and os.path.isfile(error_file):
            with open(error_file) as file:
                status, _, message = file.read().partition("\n")
            raise error_of_status(int(status), message)
    return code


# After a SIGTERM, how long the launcher waits for the workers' report once torchrun has ended:
# a second SIGTERM sent to torchrun directly (SLURM signals every process of a job, a signal to
# the process group reaches both) ends it at once, while its workers are still saving.
STOP_REPORT_WAIT_S = 60


def _run_passing_on_sigterm(command: list[str], env: dict[str, str]) -> tuple[int, bool]:
    """Run ``command`` to its end and return its exit code, and whether this process got SIGTERM.

    The first SIGTERM goes on to it (torchrun passes it to the workers, which save a checkpoint
    and stop) rather than killing this process alone; later ones would only cut torchrun's wait
    for its workers short.
    """
    process: subprocess.Popen | None = None
    received = forwarded = False

    def forward_once() -> None:
        nonlocal forwarded
        if received and process is not None and not forwarded:
            forwarded = True
            process.send_signal(signal.SIGTERM)

    def on_sigterm(number: int, frame) -> None:
        nonlocal received
        received = True
        forward_once()

    previous = signal.signal(signal.SIGTERM, on_sigterm)  # before the start: no SIGTERM is lost
    try:
        process = subprocess.Popen(command, env=env)
        forward_once()  # one that came while it was starting
        return process.wait(), received
    except BaseException:  # Ctrl-C: as subprocess.call does, end torchrun
        if process is not None:
            process.kill()
            process.wait()
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)


def _wait_for(path: str, seconds: float) -> None:
    """Until ``path`` exists, for at most ``seconds``."""
    deadline = time.monotonic() + seconds
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.2)
