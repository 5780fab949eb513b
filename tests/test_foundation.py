import json
import subprocess
import sys

import pytest

from vfbench.errors import UnknownNameError, UsageError
from vfbench.registry import Registry


def test_registry_did_you_mean():
    reg = Registry("thing")
    reg.add("videofusion", object())
    reg.add("vdm", object())
    with pytest.raises(UnknownNameError) as ei:
        reg.get("vdn")
    msg = str(ei.value)
    assert "did you mean 'vdm'" in msg and "available: vdm, videofusion" in msg


def test_registry_refuses_duplicates():
    reg = Registry("thing")

    @reg.register("a")
    class A:
        pass

    with pytest.raises(UsageError, match="already registered"):
        reg.add("a", object())


def test_registry_lazy_import_and_self_registration():
    reg = Registry("thing")
    reg.add_lazy("dumps", "json:dumps", description="d")
    assert reg.meta("dumps")["description"] == "d"
    assert reg.get("dumps") is json.dumps


def test_cli_unknown_dataset_exit_code():
    out = subprocess.run([sys.executable, "-m", "vfbench", "ls", "dataset"], capture_output=True, text=True)
    assert out.returncode == 2
    assert "did you mean 'datasets'" in out.stderr
    assert "Traceback" not in out.stderr
