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


# Measures the report as laid out at a given viewport width: the report goes, unchanged, into an iframe
# of that width (headless Chromium's own window cannot be narrower than about 500 px); a script of the
# outer page checks that the report does not scroll sideways and that no element outside a
# horizontal-scroll box sticks out of the viewport (a wide table scrolls inside its box).
_PROBE = """<!doctype html><html><body style="margin:0">
<iframe id="f" style="width:%dpx;height:900px;border:0" srcdoc="%s"></iframe>
<script>
document.getElementById('f').addEventListener('load', (ev) => {
  const d = ev.target.contentDocument, vw = d.documentElement.clientWidth, bad = [];
  for (const el of d.body.querySelectorAll('*')) {
    if (el.closest('.scroll') && !el.classList.contains('scroll')) continue;
    const r = el.getBoundingClientRect();
    if (r.width > 0 && (r.right > vw + 1 || r.left < -1)) bad.push(el.tagName + '.' + el.className + ' ' + Math.round(r.right));
  }
  document.body.setAttribute('data-layout', JSON.stringify({vw, page: d.documentElement.scrollWidth, bad}));
});
</script></body></html>"""


@pytest.mark.parametrize("width", [390, 1400])
def test_nothing_is_wider_than_the_viewport(tmp_path, width):
    import html
    import json
    import re

    from test_report import make_store

    store = make_store(tmp_path / "results")
    text = report_html.build_report(store, control_grid=False)
    page = tmp_path / "probe.html"
    page.write_text(_PROBE % (width, html.escape(text, quote=True)), encoding="utf-8")
    out = _chromium(page.resolve().as_uri(), tmp_path / "profile", "--dump-dom", f"--window-size={width + 100},1000",
                    "--virtual-time-budget=5000")
    assert out.returncode == 0, out.stderr[-2000:]
    m = re.search(r"data-layout=\"([^\"]*)\"", out.stdout)
    assert m, "the probe did not run"
    layout = json.loads(html.unescape(m.group(1)))
    assert width - 20 <= layout["vw"] <= width and layout["page"] <= layout["vw"], layout  # less its scrollbar
    assert not layout["bad"], layout["bad"][:10]


def test_screenshot_reaches_the_samples(tmp_path):
    """`vfbench report --screenshot`: the PNG runs past the sample grids and stops under the last element."""
    from PIL import Image

    from test_report import make_store
    from vfbench.reports.screenshot import MAX_HEIGHT, WIDTH, screenshot

    store = make_store(tmp_path / "results")
    path = report_html.write_report(store, control_grid=False)
    shot = screenshot(path, tmp_path / "shot.png", chromium=CHROMIUM)
    with Image.open(shot) as im:
        assert im.width == WIDTH and 2000 < im.height < MAX_HEIGHT    # cropped, and taller than one screen
        bottom = im.convert("L").crop((0, im.height - 800, im.width, im.height))
        lo, hi = bottom.getextrema()
        assert hi - lo > 50          # the last screenful (the samples / control section) is drawn
