import numpy as np
import pytest
import torch


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    np.random.seed(0)


@pytest.fixture(autouse=True)
def _one_thread():
    """Every test on one CPU thread, restored afterwards: the tiny networks of the tests run fastest on
    one, and on a shared 2-core machine a second thread mostly spins (a NAFNet test: 6 s vs 32 s)."""
    from mpimamba.threads import configure_threads

    before = torch.get_num_threads()
    configure_threads(1)
    yield
    configure_threads(before)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
