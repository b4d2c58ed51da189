"""The `reference` backend: the selective scan as a Python loop over time, the readable definition."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .common import compute_dtype, grouped, prepare_delta


def selective_scan_reference(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """h_t = exp(Δ_t A) h_{t-1} + Δ_t B_t u_t, y_t = C_t·h_t + D u_t, y ← y·SiLU(z); differentiable by autograd."""
    dtype = u.dtype
    cdt = compute_dtype(u)
    u, delta, A, B, C = (t.to(cdt) for t in (u, delta, A, B, C))
    delta = prepare_delta(delta, delta_bias, delta_softplus)
    d = u.shape[1]
    B, C = (grouped(M) for M in (B, C))
    B = B.repeat_interleave(d // B.shape[1], dim=1)  # (B, D, N, L)
    C = C.repeat_interleave(d // C.shape[1], dim=1)
    batch, d, _ = u.shape
    h = u.new_zeros(batch, d, A.shape[1])  # (B, D, N)
    ys = []
    # unbind, not x[..., t] in the loop: the backward of L slices would write L full-size zero gradients.
    for dt, ut, Bt, Ct in zip(delta.unbind(-1), u.unbind(-1), B.unbind(-1), C.unbind(-1)):
        dt, ut = dt[..., None], ut[..., None]  # (B, D, 1)
        h = torch.exp(dt * A) * h + dt * Bt * ut
        ys.append((h * Ct).sum(-1))  # (B, D)
    y = torch.stack(ys, dim=-1)  # (B, D, L)
    if D is not None:
        y = y + D.to(cdt)[None, :, None] * u
    if z is not None:
        y = y * F.silu(z.to(cdt))
    return y.to(dtype)
