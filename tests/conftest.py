"""Shared test settings."""

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _one_intra_op_thread():
    """The test models are tiny and overhead-bound: one torch thread is faster than two, and on a
    shared 2-core machine extra threads make them several times slower (and vary less run to run)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
