"""One owner per run folder: while a process holds a run, no other train (plain, --resume, --overwrite), evaluate,
export or predict writes into it; the refusal names the owner; a folder whose owner died is free."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap

import pytest

from medseg_zoo._lock import LOCK_NAME, owner_of
from medseg_zoo.cli import main
from medseg_zoo.errors import OutputError
from medseg_zoo.training import Callback, Trainer
from tests.conftest import snapshot, tiny_config, tiny_model

HOLDER = textwrap.dedent(
    """
    import sys
    from medseg_zoo._lock import RunLock
    RunLock(sys.argv[1]).acquire()
    print("held", flush=True)
    sys.stdin.read()  # until the test closes it, or kills this process
    """
)
# Whether another process could take the lock now, without medseg-zoo: exit 0 free, 1 held.
PROBE = "import fcntl, os, sys\nfd = os.open(sys.argv[1], os.O_RDONLY)\ntry:\n    fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)\nexcept OSError:\n    sys.exit(1)\n"  # noqa: E501


def _probe(run) -> int:
    return subprocess.run([sys.executable, "-c", PROBE, str(run / LOCK_NAME)], check=False).returncode


@pytest.fixture(scope="module")
def held_run(tmp_path_factory, tiny_data):
    """A finished run folder held by another live process (as a training process holds it)."""
    run = tmp_path_factory.mktemp("held") / "run"
    Trainer(tiny_model(), tiny_data, tiny_config(run, epochs=1)).fit()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(run)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout.readline().strip() == "held"
    yield run, holder
    holder.kill()
    holder.wait()


def _owner_named(holder) -> str:
    return rf"training run in progress: process {holder.pid} on {socket.gethostname()}, running since"


@pytest.mark.parametrize("options", [{}, {"overwrite": True}, {"resume": True}])
def test_a_second_trainer_is_refused_naming_the_owner(held_run, tiny_data, options):
    run, holder = held_run
    before = snapshot(run)
    with pytest.raises(OutputError, match=_owner_named(holder)):
        Trainer(tiny_model(), tiny_data, tiny_config(run, epochs=2), **options).fit()
    assert snapshot(run) == before


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "--output", "{run}", "--resume", "--epochs", "3"],
        ["train", "--checkpoint", "{ckpt}", "--data", "{data}", "--output", "{run}", "--overwrite"],
        ["evaluate", "--checkpoint", "{run}/best", "--data", "{data}", "--output", "{run}/dice.csv"],
        ["export", "--checkpoint", "{run}/best", "-o", "{run}/model.pt2"],
        ["predict", "--checkpoint", "{run}/best", "-i", "{image}", "-o", "{run}/seg.nii.gz"],
    ],
    ids=["resume", "overwrite", "evaluate", "export", "predict"],
)
def test_commands_do_not_write_into_a_live_run(held_run, tiny_data, tiny_checkpoint, argv, capsys):
    run, holder = held_run
    before = snapshot(run)
    image = sorted((tiny_data / "imagesTr").iterdir())[0]
    filled = [a.format(run=run, data=tiny_data, image=image, ckpt=tiny_checkpoint) for a in argv]
    assert main(filled) == 2
    err = capsys.readouterr().err
    assert __import__("re").search(_owner_named(holder), err), err
    assert snapshot(run) == before


def test_a_folder_whose_owner_died_is_free(tmp_path, tiny_data):
    run = tmp_path / "run"
    Trainer(tiny_model(), tiny_data, tiny_config(run, epochs=1)).fit()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(run)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout.readline().strip() == "held"
    assert owner_of(run).pid == holder.pid
    os.kill(holder.pid, signal.SIGKILL)  # a crash: nothing is cleaned up
    holder.wait()
    assert (run / LOCK_NAME).exists() and owner_of(run) is None
    Trainer(tiny_model(), tiny_data, tiny_config(run, epochs=1), overwrite=True).fit()
    assert json.loads((run / LOCK_NAME).read_text())["pid"] == os.getpid()


class _Probe(Callback):
    def __init__(self) -> None:
        self.seen: list[int] = []

    def on_epoch_end(self, trainer, row):
        self.seen.append(_probe(trainer.output))


def test_training_holds_its_folder_until_it_ends(tmp_path, tiny_data):
    probe = _Probe()
    run = tmp_path / "run"
    Trainer(tiny_model(), tiny_data, tiny_config(run, epochs=1), callbacks=[probe]).fit()
    assert probe.seen == [1]  # held while training
    assert _probe(run) == 0  # free once fit returned
    record = json.loads((run / LOCK_NAME).read_text())
    assert record["pid"] == os.getpid() and record["host"] == socket.gethostname() and record["started"]


def test_a_users_file_named_run_lock_is_not_taken(tmp_path, tiny_data):
    run = tmp_path / "run"
    run.mkdir()
    (run / LOCK_NAME).write_text("my notes about locks")
    with pytest.raises(OutputError, match=r"run\.lock is a file medseg-zoo did not write"):
        Trainer(tiny_model(), tiny_data, tiny_config(run, epochs=1)).fit()
    assert (run / LOCK_NAME).read_text() == "my notes about locks"
