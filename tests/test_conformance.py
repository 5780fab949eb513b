"""Every registered generator passes the generator contract (tests/generator_conformance.py).

The built-in generators have their own subclass (with their cheap sampling settings); any other
registered name (a plugin) runs the same suite with the defaults. A generator whose module does not
import is skipped with the import error as the reason.
"""

from __future__ import annotations

import pytest

from generator_conformance import GeneratorConformance
from vfbench.registry import GENERATORS


class TestVideoFusionConformance(GeneratorConformance):
    name = "videofusion"
    # v-prediction (the default) falls more slowly in its first steps than eps, whose identity-like
    # optimum at high t is quickly found; tests/test_learning.py is where sampling is checked
    overfit_ratio = 0.7


class TestVDMConformance(GeneratorConformance):
    name = "vdm"
    overfit_ratio = 0.7


class TestVIDMConformance(GeneratorConformance):
    name = "vidm"
    # VIDM's loss is the Charbonnier penalty (~ L1, its paper's Eq. 4), which falls roughly like the
    # square root of an MSE: 0.7 of the start here is about 0.5 in MSE terms.
    overfit_steps = 40
    overfit_lr = 1e-2
    overfit_ratio = 0.7


BUILT_IN = {cls.name for cls in (TestVideoFusionConformance, TestVDMConformance, TestVIDMConformance)}
# plugins' generators must pass too; toy generators of other test files (meta test_double) are not real ones
OTHERS = [n for n in GENERATORS.names() if n not in BUILT_IN and not GENERATORS.meta(n).get("test_double")]


@pytest.mark.skipif(not OTHERS, reason="no generators registered beyond the built-in ones")
class TestRegisteredGeneratorConformance(GeneratorConformance):
    @pytest.fixture(params=OTHERS or [None])
    def generator_name(self, request) -> str:
        return request.param


def test_built_in_generators_are_registered():
    assert BUILT_IN <= set(GENERATORS.names())
