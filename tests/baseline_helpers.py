"""Checks shared by the baseline test files (`test_baselines_a.py`, `test_baselines_b.py`): each file runs
them on its own methods, so every network meets the same shape contract."""

import torch

from mpimamba.models import build


def assert_any_size_maps_to_same_shape(method: str, preset: str) -> None:
    """An odd H×W (not a multiple of any network's `size_multiple`) comes back the same shape and finite."""
    model = build(method, preset).eval()
    x = torch.rand(1, 1, 37, 53)
    with torch.no_grad():
        y = model(x)
    assert y.shape == x.shape
    assert torch.isfinite(y).all()


def assert_multichannel_input(method: str, channels: int) -> None:
    """A `tiny` network built for `channels` input channels maps a batch of them to the same shape."""
    model = build(method, "tiny", in_channels=channels).eval()
    x = torch.rand(2, channels, 20, 27)
    with torch.no_grad():
        assert model(x).shape == x.shape
