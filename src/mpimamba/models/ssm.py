"""Selective scan (Mamba's S6 recurrence) with interchangeable backends.

    h_t = exp(Δ_t A) h_{t-1} + Δ_t B_t u_t,     y_t = C_t · h_t + D u_t,     y ← y · SiLU(z)

Shapes follow `mamba_ssm.selective_scan_fn`: u, delta, z: (B, D, L); A: (D, N); B, C: (B, N, L) or
(B, G, N, L) with D divisible by G; D: (D,); delta_bias: (D,). Output (B, D, L).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _prepare(u, delta, A, B, C, delta_bias, delta_softplus):
    """Common preprocessing: Δ bias and softplus, and B/C expanded to (B, D, N, L)."""
    if delta_bias is not None:
        delta = delta + delta_bias[None, :, None]
    if delta_softplus:
        delta = F.softplus(delta)
    d = u.shape[1]
    if B.ndim == 3:
        B = B.unsqueeze(1)  # (B, 1, N, L)
    if C.ndim == 3:
        C = C.unsqueeze(1)
    B = B.repeat_interleave(d // B.shape[1], dim=1)  # (B, D, N, L)
    C = C.repeat_interleave(d // C.shape[1], dim=1)
    return delta, B, C


def selective_scan_reference(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """The readable definition: a Python loop over time, differentiable by autograd."""
    dtype = u.dtype
    u, delta, A, B, C = (t.float() for t in (u, delta, A, B, C))
    delta, B, C = _prepare(u, delta, A, B, C, delta_bias, delta_softplus)
    batch, d, length = u.shape
    h = u.new_zeros(batch, d, A.shape[1])  # (B, D, N)
    ys = []
    for t in range(length):
        dt = delta[:, :, t, None]  # (B, D, 1)
        h = torch.exp(dt * A) * h + dt * B[..., t] * u[:, :, t, None]
        ys.append((h * C[..., t]).sum(-1))  # (B, D)
    y = torch.stack(ys, dim=-1)  # (B, D, L)
    if D is not None:
        y = y + D.float()[None, :, None] * u
    if z is not None:
        y = y * F.silu(z.float())
    return y.to(dtype)


BACKENDS = {"reference": selective_scan_reference}


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, backend="auto"):
    """Run the scan with `backend` ("auto", "reference", "cpu", "chunked", "cuda")."""
    if backend == "auto":
        backend = "reference"
    if backend not in BACKENDS:
        raise ValueError(f"selective_scan backend {backend!r} is not available; have {sorted(BACKENDS)}")
    return BACKENDS[backend](u, delta, A, B, C, D=D, z=z, delta_bias=delta_bias, delta_softplus=delta_softplus)
