"""Render the report in a real headless Chromium: no console messages (no CSP violation, nothing
blocked or failing), the content is in the DOM, and a screenshot is saved.

Needs the Debian package ``chromium`` (``/usr/bin/chromium``; the CI script installs it). The
screenshot goes to the test's tmp dir, and to ``$VFBENCH_ARTIFACTS`` when that is set.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from vfbench.reports import html as report_html

CHROMIUM = os.environ.get("VFBENCH_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"

pytestmark = [
    pytest.mark.chromium,
    pytest.mark.skipif(not Path(CHROMIUM).is_file(), reason=f"headless Chromium not installed ({CHROMIUM});"
                       " apt-get install -y chromium"),
]


def _chromium(url: str, profile: Path, *extra: str) -> subprocess.CompletedProcess:
    args = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0", *extra, url]
    return subprocess.run(args, capture_output=True, text=True, timeout=120)


def test_report_renders_in_chromium(tmp_path):
    from test_report import make_store  # the synthetic results dir of the report tests

    store = make_store(tmp_path / "results")
    path = report_html.write_report(store, control_grid=False)
    url = path.resolve().as_uri()

    shot = tmp_path / "report.png"
    out = _chromium(url, tmp_path / "profile1", f"--screenshot={shot}", "--window-size=1280,2000")
    assert out.returncode == 0, out.stderr[-2000:]
    # Every console message of the page (CSP violations, blocked loads, script errors) is logged
    # with a CONSOLE tag; a self-contained page without scripts must produce none.
    console = [line for line in out.stderr.splitlines() if ":CONSOLE" in line or "Uncaught" in line]
    assert not console, "\n".join(console)

    from PIL import Image

    with Image.open(shot) as im:
        assert im.size == (1280, 2000)
        lo, hi = im.convert("L").getextrema()
        assert hi - lo > 50          # something was drawn, not a blank page
    artifacts = os.environ.get("VFBENCH_ARTIFACTS")
    if artifacts:
        Path(artifacts).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(artifacts) / "report-chromium.png")

    dom = _chromium(url, tmp_path / "profile2", "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    text = dom.stdout
    assert "Ablations and comparisons" in text and "paper FVD (UCF-101 16x64x64)" in text
    assert "ablate-lambda-0.50-shapes-s0" in text
    assert "<script" not in text.lower()          # the hostile run name stayed text
    assert text.count('src="data:image/') >= 6     # plots and sample GIFs made it into the DOM
