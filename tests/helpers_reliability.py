"""Helpers for tests/test_reliability_*.py, and the child-process entry point those tests kill.

As a script (a *real* subprocess, so that SIGKILL is real)::

    python tests/helpers_reliability.py ARGS...            # vfbench.cli.main(ARGS)
    python tests/helpers_reliability.py A... :: B... :: C  # several CLI commands in one process

Environment of the child:

* ``VFB_FAULT``: comma-separated fault rules ``ACTION:PATTERN:N`` applied to the N-th (1-based)
  file written through ``vfbench.atomic`` whose temporary path contains ``PATTERN``:

  - ``tear``: the temporary file is cut to half its size and the process SIGKILLs itself before
    the rename (what a kill in the middle of ``torch.save`` / ``np.save`` leaves on disk);
  - ``kill-after``: the file is renamed into place, then the process SIGKILLs itself (before
    whatever the code writes next, e.g. ``latest.json`` after a checkpoint);
  - ``enospc``: the write fails with ``OSError(ENOSPC)`` (a full disk).
* ``VFB_TEST_METRICS=1``: registers the test doubles below (extractor ``rel-proj``, dataset
  ``reltiny``, metrics ``fvd_rel``, ``kvd_rel``, ``is_rel``) before running the CLI.
* ``VFB_CALL_LOG``: the test extractor appends one line per call (``real|fake N``) there.
* ``VFB_BARRIER=DIR:N``: wait until N children have checked in under DIR before starting (so that
  concurrent children really overlap).
* ``VFB_EXTRACT_SLEEP``: seconds the test extractor sleeps per call (widens race windows).

Every child runs torch with one thread: on this shared 2-core machine two threads per process
are an order of magnitude slower, and one thread keeps CPU results bit-reproducible.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
import types
from pathlib import Path
from typing import Dict, List, Optional, Sequence

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SCRIPT = str(Path(__file__).resolve())

TINY = ["--preset", "tiny", "--frames", "4", "--size", "8", "--batch-size", "2", "--device", "cpu",
        "--no-progress"]


# -- parent side ------------------------------------------------------------------------------------
def child_env(**extra: str) -> Dict[str, str]:
    env = dict(os.environ)
    for k in ("VFB_FAULT", "VFB_TEST_METRICS", "VFB_CALL_LOG", "VFB_BARRIER", "VFB_EXTRACT_SLEEP", "VFBENCH_DEBUG"):
        env.pop(k, None)
    env.pop("PYTHONWARNINGS", None)
    env.update({"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONHASHSEED": "0"})
    env.update({k: str(v) for k, v in extra.items()})
    return env


def spawn(args: Sequence[str], **env) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, SCRIPT, *map(str, args)], cwd=str(ROOT), env=child_env(**env),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(p: subprocess.Popen, timeout: float = 240) -> subprocess.CompletedProcess:
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
        raise AssertionError(f"child timed out: {p.args}\n{err[-3000:]}")
    return subprocess.CompletedProcess(p.args, p.returncode, out, err)


def run(args: Sequence[str], timeout: float = 240, **env) -> subprocess.CompletedProcess:
    return finish(spawn(args, **env), timeout)


def vfbench(args: Sequence[str], timeout: float = 120, **env) -> subprocess.CompletedProcess:
    """The real console entry point, ``python -m vfbench ...`` (no hooks at all)."""
    return subprocess.run([sys.executable, "-m", "vfbench", *map(str, args)], cwd=str(ROOT), env=child_env(**env),
                          capture_output=True, text=True, timeout=timeout)


def cli_in_process(capsys, *argv):
    """``vfbench ARGV`` in this process (``vfbench.cli.main``): ``(exit code, stdout, stderr)`` as captured
    by pytest's ``capsys``; arguments may be paths or numbers."""
    import pytest

    from vfbench.cli import main

    with pytest.raises(SystemExit) as ei:
        main([str(a) for a in argv])
    out = capsys.readouterr()
    return ei.value.code, out.out, out.err


def exit_codes(stdout: str) -> List[int]:
    """Exit codes of the commands of a multi-command child (``::``), from its ``@@exit N`` lines."""
    return [int(line.split()[1]) for line in stdout.splitlines() if line.startswith("@@exit ")]


def assert_clean_error(stderr: str, code: int, expected_code: int, *needles: str) -> str:
    """One ``error:`` line, the documented exit code, no traceback, not the last-resort message."""
    assert code == expected_code, f"exit {code} (expected {expected_code}); stderr:\n{stderr}"
    assert "Traceback" not in stderr, stderr
    lines = [ln for ln in stderr.splitlines() if ln.startswith("error:") or ln.startswith("Error")
             or "Usage:" in ln or ln.startswith("Try ")]
    errs = [ln for ln in stderr.splitlines() if ln.startswith("error:")]
    if expected_code == 2 and not errs:  # click's own usage errors: "Error: Invalid value for ..."
        assert any("Error" in ln for ln in lines), stderr
        msg = "\n".join(lines)
    else:
        assert len(errs) == 1, stderr
        msg = errs[0]
        tail = stderr[stderr.index(msg) + len(msg):].strip()
        assert not tail, f"the error message runs over several lines:\n{stderr}"
        assert not msg.startswith("error: unexpected "), f"an unhandled exception reached the user: {msg}"
    for n in needles:
        assert n in msg, f"{n!r} not in {msg!r}"
    return msg


def tree_digest(folder: Path) -> Dict[str, bytes]:
    """Every regular file under ``folder`` (relative path -> bytes), to prove nothing was lost."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def state_tensors(ckpt: Path) -> Dict[str, "object"]:
    """Flat name -> tensor of a checkpoint's model, EMA and optimizer state (for bit comparisons)."""
    import torch

    obj = torch.load(ckpt, map_location="cpu", weights_only=True)
    flat: Dict[str, object] = {}

    def walk(node, prefix):
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{prefix}.{k}")
        elif isinstance(node, (list, tuple)):
            for i, v in enumerate(node):
                walk(v, f"{prefix}.{i}")
        elif isinstance(node, torch.Tensor):
            flat[prefix] = node
        elif isinstance(node, (int, float)) and not isinstance(node, bool):
            flat[prefix] = torch.tensor(node)

    for key in ("model", "ema", "optimizer", "step", "ema_updates"):
        walk(obj[key], key)
    return flat


def assert_same_state(a: Path, b: Path) -> None:
    import torch

    sa, sb = state_tensors(a), state_tensors(b)
    assert sa.keys() == sb.keys()
    diff = [k for k in sa if not torch.equal(sa[k], sb[k])]
    assert not diff, f"{len(diff)} tensors differ between {a} and {b}, e.g. {diff[:5]}"


def make_samples_run(root: Path, name: str = "r", n: int = 12, frames: int = 4, size: int = 8,
                     dataset: str = "reltiny") -> Path:
    """A results folder with one run whose samples are uint8 shards (no training needed)."""
    import numpy as np

    run = root / "runs" / name
    sdir = run / "samples" / "t"
    sdir.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"generator": "vdm", "generator_config": {},
                                                 "dataset": {"name": dataset}, "train": {}}))
    clips = np.random.default_rng(5).integers(0, 256, size=(n, frames, 3, size, size), dtype=np.uint8)
    for i in range(0, n, 4):
        np.save(sdir / f"shard-{i // 4:05d}.npy", clips[i:i + 4])
    (sdir / "manifest.json").write_text(json.dumps({"generator": "vdm", "num": n, "complete": True}))
    return run


def try_mount_tmpfs(folder: Path, size: str) -> bool:
    """Mount a tiny tmpfs at ``folder`` (root with CAP_SYS_ADMIN only); False where not allowed."""
    folder.mkdir(parents=True, exist_ok=True)
    try:
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                           capture_output=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return r.returncode == 0


def umount(folder: Path) -> None:
    subprocess.run(["umount", "-l", str(folder)], capture_output=True, timeout=20)


# -- test doubles for the evaluation children -------------------------------------------------------
FR, SZ = 4, 8


def register_test_metrics(monkeypatch=None) -> None:
    """Register the test doubles: for good in a child process, or undoably through ``monkeypatch``."""
    import numpy as np
    import torch

    from vfbench.metrics.base import FeatureExtractor
    from vfbench.metrics.protocols import MetricSpec
    from vfbench.registry import DATASETS, EXTRACTORS, METRICS

    class RelProjection(FeatureExtractor):
        """TEST DOUBLE: a fixed random projection of pooled pixels (deterministic, float64)."""

        name = "rel-proj"
        outputs = ("features", "probs")

        def __init__(self, preset="reference", device="cpu", batch_size=8):
            self.preset = preset
            self.proj = np.random.default_rng(123).standard_normal((FR * 3 * (SZ // 2) ** 2, 5)) / 20

        def extract(self, clips):
            x = clips.double().div(255)
            b, t, c, h, w = x.shape
            x = torch.nn.functional.avg_pool2d(x.reshape(b * t, c, h, w), 2).reshape(b, -1).numpy()
            f = x @ self.proj
            log = os.environ.get("VFB_CALL_LOG")
            if log:
                side = "real" if int(clips[0, 0, 0, 0, 0]) == 255 else "fake"
                fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
                os.write(fd, f"{side} {b} {os.getpid()}\n".encode())
                os.close(fd)
            time.sleep(float(os.environ.get("VFB_EXTRACT_SLEEP", "0")))
            e = np.exp(f - f.max(1, keepdims=True))
            return {"features": f, "probs": e / e.sum(1, keepdims=True)}

        def describe(self):
            return {"name": self.name, "preset": self.preset, "weights_sha256": "b" * 64}

    class RelTiny(torch.utils.data.Dataset):
        """TEST DOUBLE: random real clips whose first pixel is 255 (marks the real side)."""

        def __init__(self, split="train", frames=FR, size=SZ, data_root=None, stride=None, seed=0):
            self.frames, self.size, self.seed, self.split = frames, size, seed, split

        def __len__(self):
            return 24

        def __getitem__(self, i):
            v = np.random.default_rng([self.seed, i]).integers(0, 250, (self.frames, 3, self.size, self.size),
                                                               dtype=np.uint8)
            v[0, 0, 0, 0] = 255
            return {"video": torch.from_numpy(v), "label": -1, "content": -1, "motion": -1, "index": i}

        def describe(self):
            return {"name": "reltiny", "split": self.split, "frames": self.frames, "size": self.size,
                    "count": 24, "seed": self.seed}

    def add(reg, name, obj, **meta):
        if monkeypatch is None:
            reg.add(name, obj, **meta)
        else:
            from vfbench.registry import Entry

            monkeypatch.setitem(reg._entries, name, Entry(name, obj=obj, meta=meta))

    add(EXTRACTORS, "rel-proj", RelProjection)
    add(DATASETS, "reltiny", RelTiny)
    for s in (MetricSpec("fvd_rel", "fvd", "rel-proj", num_real=16, num_fake=8, frames=FR, resolution=SZ),
              MetricSpec("kvd_rel", "kvd", "rel-proj", num_real=16, num_fake=8, frames=FR, resolution=SZ),
              MetricSpec("is_rel", "is", "rel-proj", num_real=0, num_fake=8, frames=FR, resolution=SZ,
                         higher_is_better=True)):
        add(METRICS, s.name, s, higher_is_better=s.higher_is_better)


# -- child side: fault injection into vfbench.atomic ---------------------------------------------------
def install_faults(spec: str) -> None:
    """Replace ``vfbench.atomic.os`` by a shim whose ``fdopen``/``replace`` obey the VFB_FAULT rules."""
    import vfbench.atomic as atomic

    rules = []
    for item in filter(None, spec.split(",")):
        action, pattern, nth = item.split(":")
        rules.append({"action": action, "pattern": pattern, "nth": int(nth), "seen": 0})
    real_os = os

    def matching(tmp: str, actions) -> Optional[dict]:
        for r in rules:
            if r["action"] in actions and r["pattern"] in tmp:
                r["seen"] += 1
                if r["seen"] == r["nth"]:
                    return r
        return None

    class FullDiskFile:
        def __init__(self, fh):
            self._fh = fh

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

        def __getattr__(self, name):
            return getattr(self._fh, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self._fh.close()

    def fdopen(fd, *a, **kw):
        fh = real_os.fdopen(fd, *a, **kw)
        try:
            tmp = real_os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            return fh
        if matching(tmp, ("enospc",)):
            return FullDiskFile(fh)
        return fh

    def replace(src, dst):
        src = str(src)
        r = matching(src, ("tear", "kill-after"))
        if r is not None and r["action"] == "tear":
            size = real_os.path.getsize(src)
            real_os.truncate(src, size // 2)
            real_os.kill(real_os.getpid(), signal.SIGKILL)
        real_os.replace(src, dst)
        if r is not None:
            real_os.kill(real_os.getpid(), signal.SIGKILL)

    shim = types.ModuleType("os_with_faults")
    shim.__dict__.update({k: getattr(real_os, k) for k in dir(real_os) if not k.startswith("__")})
    shim.fdopen, shim.replace = fdopen, replace
    atomic.os = shim


def _barrier(spec: str) -> None:
    folder, n = spec.rsplit(":", 1)
    Path(folder).mkdir(parents=True, exist_ok=True)
    (Path(folder) / f"ready-{os.getpid()}").touch()
    deadline = time.time() + 120
    while len(list(Path(folder).glob("ready-*"))) < int(n) and time.time() < deadline:
        time.sleep(0.02)


def child_main(argv: List[str]) -> int:
    import torch

    torch.set_num_threads(1)
    if os.environ.get("VFB_FAULT"):
        install_faults(os.environ["VFB_FAULT"])
    if os.environ.get("VFB_TEST_METRICS") == "1":
        register_test_metrics()
    from vfbench.cli import main

    commands, cur = [], []
    for a in argv:
        if a == "::":
            commands.append(cur)
            cur = []
        else:
            cur.append(a)
    commands.append(cur)
    if os.environ.get("VFB_BARRIER"):
        _barrier(os.environ["VFB_BARRIER"])
    worst = 0
    for cmd in commands:
        try:
            main(cmd)
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        print(f"@@exit {code}", flush=True)
        sys.stderr.flush()
        worst = max(worst, code)
    return worst


if __name__ == "__main__":
    sys.exit(child_main(sys.argv[1:]))
