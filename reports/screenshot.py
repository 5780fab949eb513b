"""A PNG of a rendered report, taken with headless Chromium (``vfbench report --screenshot PATH``).

Chromium's ``--screenshot`` captures the window, not the page, so the window is made taller than
any report and the blank space under the last element is cropped off: the picture then runs from
the title to the control grids (docs/report.png is made this way and shows the samples).
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Optional

from vfbench.errors import UsageError, VfbenchError

WIDTH = 1280
MAX_HEIGHT = 16000   # taller reports are cut at this height (a screenshot, not an archive)
MARGIN = 24          # white space kept under the last element


def find_chromium() -> str:
    """The headless Chromium to use: $VFBENCH_CHROMIUM, else chromium / chromium-browser on PATH."""
    found = os.environ.get("VFBENCH_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not found or not Path(found).is_file():
        raise UsageError("--screenshot needs headless Chromium, which is not on PATH; install the chromium"
                         " package or set VFBENCH_CHROMIUM to its executable")
    return found


def _crop_blank_bottom(png: bytes) -> bytes:
    import numpy as np
    from PIL import Image

    im = Image.open(io.BytesIO(png)).convert("RGB")
    px = np.asarray(im)
    inked = np.nonzero((px != px[-1, -1]).any(axis=(1, 2)))[0]   # rows unlike the page background
    bottom = min(im.height, int(inked[-1]) + 1 + MARGIN) if len(inked) else im.height
    buf = io.BytesIO()
    im.crop((0, 0, im.width, bottom)).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def screenshot(html_path: Path, out: Path, width: int = WIDTH, chromium: Optional[str] = None) -> Path:
    """Write a PNG of the report at ``html_path`` as laid out ``width`` px wide, cropped to its content."""
    from vfbench.atomic import atomic_write_bytes

    exe = chromium or find_chromium()
    with tempfile.TemporaryDirectory(prefix="vfbench-shot-") as tmp:
        shot = Path(tmp) / "shot.png"
        args = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--hide-scrollbars",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                f"--user-data-dir={Path(tmp) / 'profile'}", f"--window-size={width},{MAX_HEIGHT}",
                f"--screenshot={shot}", Path(html_path).resolve().as_uri()]
        try:
            done = subprocess.run(args, capture_output=True, text=True, timeout=180)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise VfbenchError(f"Chromium could not take the screenshot ({exc}); check that {exe} runs headless")
        if done.returncode != 0 or not shot.is_file():
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise VfbenchError(f"Chromium exited with {done.returncode} without a screenshot ({last});"
                               f" check that {exe} runs headless")
        data = _crop_blank_bottom(shot.read_bytes())
    atomic_write_bytes(Path(out), data)
    return Path(out)
