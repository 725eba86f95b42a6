"""A real two-node launch on one machine: two ``diffengine wds_train`` node agents (``NNODES=2``,
``NODE_RANK=0`` and ``1``, one ``MASTER_ADDR``/``MASTER_PORT``), each starting ``NPROC_PER_NODE=2``
gloo workers, 4 ranks in all.

Each node gets its own work dir, as nodes without a shared file system would: what lands in
node 1's shows what the ranks other than global rank 0 write.
"""
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from diffengine.entry_point import main
from tests.helpers import demo_cfg_options, free_port

pytestmark = pytest.mark.slow

REPO = Path(__file__).parents[2]
TIMEOUT_S = 240  # for both nodes together; a run takes under a minute on 2 CPU cores


def demo_config(folder: Path, hooks: str, helper: str) -> Path:
    """The packaged demo config copied to ``folder``, its custom hooks replaced by ``hooks``."""
    assert main(["copy-cfg", "lavi_bridge_demo", str(folder)]) == 0
    config = folder / "lavi_bridge" / "lavi_bridge_demo.py"
    config.write_text(config.read_text() + f"\nfrom tests.helpers import {helper}\ncustom_hooks = {hooks}\n")
    return config


def launch_two_nodes(config: Path, work_dirs: list[Path], options: list[str], logs: Path) -> list[tuple[int, str]]:
    """Run node 0 and node 1 concurrently; returns each node's (exit code, output).

    Both must end within TIMEOUT_S; whatever is left of either (agent, workers) is killed.
    """
    port = str(free_port())
    processes, outputs = [], []
    try:
        for node, work_dir in enumerate(work_dirs):
            env = {**os.environ, "NNODES": "2", "NODE_RANK": str(node), "NPROC_PER_NODE": "2",
                   "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port, "OMP_NUM_THREADS": "1"}
            output = open(logs / f"node{node}.log", "w+")  # a file: a pipe nobody reads could fill up
            outputs.append(output)
            # a session of its own: the finally below ends the node's agent and workers too
            processes.append(subprocess.Popen(
                [sys.executable, "-m", "diffengine", "wds_train", str(config), "--work-dir", str(work_dir),
                 "--cfg-options", *options],
                stdout=output, stderr=subprocess.STDOUT, env=env, cwd=REPO, start_new_session=True))
        deadline = time.monotonic() + TIMEOUT_S
        for process in processes:
            try:
                process.wait(timeout=max(deadline - time.monotonic(), 1))
            except subprocess.TimeoutExpired:
                tails = "\n".join(f"--- node {node}:\n{(logs / f'node{node}.log').read_text()[-3000:]}"
                                  for node in range(2))
                pytest.fail(f"the two nodes did not both end within {TIMEOUT_S} s\n{tails}")
        return [(process.returncode, (logs / f"node{node}.log").read_text())
                for node, process in enumerate(processes)]
    finally:
        for process in processes:  # the launcher, its torchrun agent and workers: one session
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        for output in outputs:
            output.close()


def test_two_nodes_train_to_the_end_on_disjoint_data_and_only_global_rank_0_writes(
        tiny_t5, tiny_sd, demo_shards, tmp_path):
    # the demo's hooks up to its sample grid (not its ShapesBench scores: they write no file)
    config = demo_config(tmp_path / "cfg", "[*custom_hooks[:4], dict(type=KeyRecorderHook)]", "KeyRecorderHook")
    # exact mode, 64 samples per epoch, batch 4, 4 ranks: one epoch is 4 iterations per rank
    options = [option for option in demo_cfg_options(tiny_t5, tiny_sd, demo_shards, max_iters=4,
                                                     checkpoint_interval=2)
               if not option.startswith("custom_hooks.4.")]
    work_dirs = [tmp_path / "node0", tmp_path / "node1"]
    (code0, out0), (code1, out1) = launch_two_nodes(config, work_dirs, options, tmp_path)
    assert code0 == 0, out0[-3000:]
    assert code1 == 0, out1[-3000:]
    assert "Iter(train) [4/4]" in out0
    # global ranks 0, 1 ran on node 0 and 2, 3 on node 1 (KeyRecorderHook names its file by global rank)
    assert sorted(path.name for path in work_dirs[0].glob("keys_rank*.txt")) == ["keys_rank0.txt", "keys_rank1.txt"]
    assert sorted(path.name for path in work_dirs[1].glob("keys_rank*.txt")) == ["keys_rank2.txt", "keys_rank3.txt"]
    keys = [(work_dirs[rank // 2] / f"keys_rank{rank}.txt").read_text().split() for rank in range(4)]
    assert [len(rank_keys) for rank_keys in keys] == [16] * 4
    assert len(set().union(*keys)) == 64  # disjoint: 4 x 16 keys, none twice
    assert set().union(*keys) == {f"{index:06d}" for index in range(64)}
    # global rank 0 alone wrote checkpoints, bridges and sample grids, with all 4 ranks' stream positions
    assert (work_dirs[0] / "iter_2.pth").is_file() and (work_dirs[0] / "iter_4.pth").is_file()
    assert (work_dirs[0] / "bridge" / "iter_4" / "bridge.json").is_file()
    assert (work_dirs[0] / "samples" / "iter_4.png").is_file()
    streams = torch.load(work_dirs[0] / "iter_4.pth", weights_only=True)["meta"]["data_stream"]
    assert [state["positions"] for state in streams] == [[16]] * 4
    # node 1 (global ranks 2, 3) wrote no file but the test hook's keys: no checkpoint, bridge, sample or log
    assert sorted(path.name for path in work_dirs[1].rglob("*") if path.is_file()) == [
        "keys_rank2.txt", "keys_rank3.txt"]


def test_a_failure_on_one_node_ends_both_with_a_non_zero_exit(tiny_t5, tiny_sd, demo_shards, tmp_path):
    # the demo's first three custom hooks (no sampling: it costs time and proves nothing here)
    config = demo_config(tmp_path / "cfg", "[*custom_hooks[:3], dict(type=FailOnRankHook, rank=2, iteration=2)]",
                         "FailOnRankHook")
    options = [option for option in demo_cfg_options(tiny_t5, tiny_sd, demo_shards, max_iters=4)
               if not option.startswith("custom_hooks.")]
    work_dirs = [tmp_path / "node0", tmp_path / "node1"]
    (code0, out0), (code1, out1) = launch_two_nodes(config, work_dirs, options, tmp_path)
    assert code1 != 0, out1[-3000:]
    assert "injected failure on rank 2 at iteration 2" in out1
    # node 0 was training (not failing to start) and its workers, losing their peers, fail too: no hang
    assert code0 != 0, out0[-3000:]
    assert "Iter(train) [2/4]" in out0 and "Iter(train) [3/4]" not in out0
    assert not (work_dirs[0] / "iter_4.pth").exists()
