"""The `cuda` backend: mamba_ssm's fused kernel, a pass-through (optional extra `mpimamba[cuda]`)."""

from __future__ import annotations

import functools
import importlib

MAMBA_SSM = "mamba_ssm.ops.selective_scan_interface"


@functools.cache
def importable(module: str) -> bool:
    """True when `module` imports (mamba_ssm can be installed yet fail to load against this torch)."""
    try:
        importlib.import_module(module)
    except Exception:  # noqa: BLE001 — any failure to load means "not available"
        return False
    return True


def selective_scan_cuda(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    if not u.is_cuda:
        raise ValueError("selective_scan backend 'cuda' needs tensors on a GPU; use 'cpu' or 'auto' on a CPU")
    if not importable(MAMBA_SSM):
        raise RuntimeError("selective_scan backend 'cuda' needs mamba_ssm (`pip install mpimamba[cuda]`)")
    from mamba_ssm.ops.selective_scan_interface import selective_scan_fn

    return selective_scan_fn(u, delta, A, B, C, D=D, z=z, delta_bias=delta_bias, delta_softplus=delta_softplus)
