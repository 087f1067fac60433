"""Two torchrun agents on one machine acting as two nodes (c10d rendezvous, gloo): one training run whose numbers
equal one process's at the same global batch, every file written once; and a 2-rank predict writing each case once.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys

import pytest

from medseg_zoo._lock import owner_of
from medseg_zoo.cli import main
from tests.cli.test_train import TRAIN, _losses


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_nodes(arguments: list[str], run_id: str) -> list[subprocess.CompletedProcess]:
    """The same medseg-zoo command under two torchrun agents, each a node of one process."""
    port = _free_port()
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1"]
    launcher += ["--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", run_id]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    agents = [
        subprocess.Popen(
            [*launcher, "-m", "medseg_zoo", *arguments],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(2)
    ]
    results = []
    for agent in agents:
        try:
            stdout, stderr = agent.communicate(timeout=400)
        except subprocess.TimeoutExpired:
            for other in agents:
                other.kill()
            raise
        results.append(subprocess.CompletedProcess(agent.args, agent.returncode, stdout, stderr))
    for result in results:
        assert result.returncode == 0, result.stderr[-3000:]
    return results


def _files(run) -> list[str]:
    """The run's files; TensorBoard's event file named without its time stamp and process id."""
    names = [p.relative_to(run).as_posix() for p in run.rglob("*") if p.is_file()]
    return sorted(re.sub(r"events\.out\.tfevents\..*", "events", n) for n in names)


def test_two_nodes_train_one_run_equal_to_one_process(tiny_data, tiny_checkpoint, tmp_path):
    common = ["--checkpoint", str(tiny_checkpoint), "--data", str(tiny_data), "--fold", "0/3", *TRAIN]
    assert main(["train", *common, "--output", str(tmp_path / "one"), "--batch-size", "2"]) == 0
    _two_nodes(["train", *common, "--output", str(tmp_path / "two"), "--batch-size", "1"], "train")
    run = json.loads((tmp_path / "two" / "config.json").read_text())
    assert run["world_size"] == 2
    for (loss_a, dice_a), (loss_b, dice_b) in zip(_losses(tmp_path / "one"), _losses(tmp_path / "two"), strict=True):
        assert loss_b == pytest.approx(loss_a, rel=1e-5)  # the same global batch: the same gradients, summed apart
        assert dice_b == pytest.approx(dice_a, abs=1e-4)
    # One run folder, each file once: the same files as the one-process run, no per-rank copies or leftovers
    assert _files(tmp_path / "two") == _files(tmp_path / "one")
    log = (tmp_path / "two" / "train.log").read_text()
    assert len(re.findall(r"epoch 2/2", log)) == 1  # written by rank 0 alone
    lock = json.loads((tmp_path / "two" / "run.lock").read_text())  # rank 0 owned the folder, and let it go
    assert lock["pid"] != os.getpid() and owner_of(tmp_path / "two") is None


def test_two_nodes_predict_each_case_once(tiny_data, tiny_checkpoint, tmp_path):
    images = tiny_data / "imagesTr"
    arguments = ["predict", "--checkpoint", str(tiny_checkpoint), "-i", str(images), "--device", "cpu"]
    results = _two_nodes([*arguments, "-o", str(tmp_path / "out")], "predict")
    names = sorted(p.name for p in images.glob("*.nii.gz"))
    written = sorted(w for r in results for w in re.findall(r"BRATS_\d{3}\.nii\.gz", r.stdout))
    assert written == names  # every case by exactly one node
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == names
