"""The thread count vfbench computes with, and Ctrl-C: one line, exit 130, the last completed step kept."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from vfbench.checkpoint import list_checkpoints
from vfbench.cli.interrupt import interrupted_line, resume_command
from vfbench.errors import Interrupted, UsageError
from vfbench.threads import choose_threads

import test_trainer  # noqa: F401  (registers the toy generator "toy-test")
from test_trainer import ToyClips, ToyConfig, ToyGen

ROOT = Path(__file__).resolve().parents[1]


# -- threads -----------------------------------------------------------------------------------------
def test_threads_flag_then_env_then_free_cores():
    assert choose_threads(3, env={"OMP_NUM_THREADS": "2"}).threads == 3
    c = choose_threads(None, env={"OMP_NUM_THREADS": "2"}, cores=8, load=0.0)
    assert (c.threads, c.source) == (2, "OMP_NUM_THREADS")
    # unset: the cores the load leaves wholly free; a busy 2-core machine gets one thread, never zero
    assert choose_threads(None, env={}, cores=2, load=1.2).threads == 1
    assert choose_threads(None, env={}, cores=2, load=7.0).threads == 1
    assert choose_threads(None, env={}, cores=8, load=0.1).threads == 7
    assert choose_threads(None, env={}, cores=2, load=0.0).threads == 2
    assert "load 1.2" in choose_threads(None, env={}, cores=2, load=1.2).describe()


@pytest.mark.parametrize("bad", [0, -1, True])
def test_threads_refuses_nonsense(bad):
    with pytest.raises(UsageError, match="--threads"):
        choose_threads(bad)
    with pytest.raises(UsageError, match="OMP_NUM_THREADS"):
        choose_threads(None, env={"OMP_NUM_THREADS": "many"})


def test_cli_prints_threads_once_and_applies_them(tmp_path, capsys):
    from vfbench.cli import main

    before = torch.get_num_threads()
    with pytest.raises(SystemExit):
        main(["--threads", "1", "sample", "nope", "--num", "2", "--results", str(tmp_path)])
    err = capsys.readouterr().err
    assert err.count("threads: 1 (from --threads") == 1
    assert torch.get_num_threads() == 1
    torch.set_num_threads(before)
    with pytest.raises(SystemExit):  # a listing computes nothing: no thread line
        main(["ls", "generators"])
    assert "threads:" not in capsys.readouterr().err


# -- Ctrl-C ------------------------------------------------------------------------------------------
def test_resume_command_and_line():
    assert resume_command(["train", "vdm", "--force"]) == ["train", "vdm", "--resume"]
    assert resume_command(["sample", "r", "--num", "4"]) == ["sample", "r", "--num", "4"]
    line = interrupted_line(Interrupted("checkpoint at step 3 of 9 in x"), ["train", "vdm", "--name", "a b"])
    assert line == "interrupted: kept checkpoint at step 3 of 9 in x; resume with: vfbench train vdm --name 'a b' --resume"
    assert "finished runs" in interrupted_line(KeyboardInterrupt(), ["demo", "--quick"])


@pytest.fixture
def default_sigint():
    # a test runner started in the background (`cmd &`) inherits SIGINT ignored; Ctrl-C needs the default
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_trainer_checkpoints_last_completed_step_on_sigint(tmp_path, default_sigint):
    from vfbench.training import TrainConfig, train

    class Interrupting(ToyGen):
        def loss(self, batch):
            if self.calls == 3:  # Ctrl-C arrives while step 4 is computed: step 4 still completes
                os.kill(os.getpid(), signal.SIGINT)
            return super().loss(batch)

    cfg = TrainConfig(steps=50, batch_size=2, ckpt_every=40, log_every=1, device="cpu")
    with pytest.raises(Interrupted, match="step 4 of 50"):
        train(tmp_path / "run", Interrupting(ToyConfig(frames=2, size=8)), ToyClips(), cfg, progress=False)
    assert [s for s, _ in list_checkpoints(tmp_path / "run" / "checkpoints")] == [4]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler is put back
    summary = train(tmp_path / "run", ToyGen(ToyConfig(frames=2, size=8)), ToyClips(),
                    TrainConfig(steps=5, batch_size=2, log_every=1, device="cpu"), resume=True, progress=False)
    assert summary["resumed_from"] == 4 and summary["steps"] == 5


def test_ctrl_c_in_a_cli_subprocess(tmp_path):
    """A real SIGINT to ``vfbench train``: exit 130, one line naming the checkpoint and the resume command."""
    res = tmp_path / "res"
    code = ("import sys; sys.path.insert(0, %r); import test_trainer; from vfbench.cli import main; main()"
            % str(ROOT / "tests"))
    argv = ["train", "toy-test", "--frames", "2", "--size", "8", "--batch-size", "2", "--steps", "1000000",
            "--ckpt-every", "100000", "--log-every", "1", "--results", str(res), "--name", "toy", "--no-progress",
            "--device", "cpu"]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT)] + sys.path), OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-c", code, *argv], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    log = res / "runs" / "toy" / "log.csv"
    deadline = time.time() + 60
    while time.time() < deadline and not (log.is_file() and len(log.read_text().splitlines()) > 3):
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    lines = [ln for ln in err.splitlines() if ln.startswith("interrupted:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    steps = [s for s, _ in list_checkpoints(res / "runs" / "toy" / "checkpoints")]
    assert len(steps) == 1 and steps[0] >= 3
    assert f"checkpoint at step {steps[0]} of 1000000" in lines[0]
    assert lines[0].endswith("--device cpu --resume")
