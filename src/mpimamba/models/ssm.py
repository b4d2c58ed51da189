"""Selective scan (Mamba's S6 recurrence) with interchangeable backends.

    h_t = exp(Δ_t A) h_{t-1} + Δ_t B_t u_t,     y_t = C_t · h_t + D u_t,     y ← y · SiLU(z)

Shapes follow `mamba_ssm.selective_scan_fn`: u, delta, z: (B, D, L); A: (D, N); B, C: (B, N, L) or
(B, G, N, L) with D divisible by G; D: (D,); delta_bias: (D,). Output (B, D, L).

Backends, all giving the same numbers (tests/test_ssm.py holds them equal to `reference`):
- `reference`: a Python loop over time, the readable definition;
- `cpu`: numba kernel with a hand-written backward (ssm_cpu.py), the fast path on a CPU;
- `chunked`: pure-PyTorch parallel scan over chunks (ssm_chunked.py), for GPUs without mamba_ssm;
- `cuda`: mamba_ssm's fused kernel, when that package imports and the tensors are on a GPU.
`auto` picks cuda > chunked on a GPU, cpu (reference if numba is missing) on a CPU.
"""

from __future__ import annotations

import functools
import importlib

import torch
import torch.nn.functional as F


def _compute_dtype(u):
    """float64 stays float64 (so tests can compare against an exact-ish reference); the rest runs in float32."""
    return torch.float64 if u.dtype == torch.float64 else torch.float32


def _prepare_delta(delta, delta_bias, delta_softplus):
    """Δ with its bias and softplus applied; autograd differentiates these for every backend."""
    if delta_bias is not None:
        delta = delta + delta_bias[..., None].to(delta.dtype)  # (D, 1) or grouped (G, E, 1)
    if delta_softplus:
        delta = F.softplus(delta)
    return delta


def _grouped(M):
    """B or C as (B, G, N, L): the ungrouped (B, N, L) form is one group."""
    return M.unsqueeze(1) if M.ndim == 3 else M


def selective_scan_reference(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """The readable definition: a Python loop over time, differentiable by autograd."""
    dtype = u.dtype
    cdt = _compute_dtype(u)
    u, delta, A, B, C = (t.to(cdt) for t in (u, delta, A, B, C))
    delta = _prepare_delta(delta, delta_bias, delta_softplus)
    d = u.shape[1]
    B, C = (_grouped(M) for M in (B, C))
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


def selective_scan_cpu(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """numba kernel, float32 inside whatever the input dtype."""
    if u.is_cuda:
        raise ValueError("selective_scan backend 'cpu' needs CPU tensors; use 'cuda', 'chunked' or 'auto' on a GPU")
    try:
        from .ssm_cpu import selective_scan_cpu as kernel
    except ImportError as err:
        raise RuntimeError(
            f"selective_scan backend 'cpu' needs numba ({err}); `pip install numba`, or pass backend='chunked'"
        ) from err
    dtype = u.dtype
    f32 = lambda t: None if t is None else t.float()  # noqa: E731
    delta = _prepare_delta(f32(delta), delta_bias, delta_softplus)
    y = kernel(f32(u), delta, f32(A), _grouped(f32(B)), _grouped(f32(C)), f32(D), f32(z))
    return y.to(dtype)


def selective_scan_chunked(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """Pure-PyTorch chunked parallel scan (any device)."""
    from .ssm_chunked import chunked_scan

    dtype = u.dtype
    cast = lambda t: None if t is None else t.to(_compute_dtype(u))  # noqa: E731
    y = chunked_scan(cast(u), cast(delta), cast(A), _grouped(cast(B)), _grouped(cast(C)), cast(D), cast(z),
                     cast(delta_bias), delta_softplus)
    return y.to(dtype)


def selective_scan_cuda(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """mamba_ssm's fused CUDA kernel (optional extra `mpimamba[cuda]`)."""
    if not u.is_cuda:
        raise ValueError("selective_scan backend 'cuda' needs tensors on a GPU; use 'cpu' or 'auto' on a CPU")
    if not importable("mamba_ssm.ops.selective_scan_interface"):
        raise RuntimeError("selective_scan backend 'cuda' needs mamba_ssm (`pip install mpimamba[cuda]`)")
    from mamba_ssm.ops.selective_scan_interface import selective_scan_fn

    return selective_scan_fn(u, delta, A, B, C, D=D, z=z, delta_bias=delta_bias, delta_softplus=delta_softplus)


BACKENDS = {
    "reference": selective_scan_reference,
    "cpu": selective_scan_cpu,
    "chunked": selective_scan_chunked,
    "cuda": selective_scan_cuda,
}


@functools.cache
def importable(module):
    """True when `module` imports (mamba_ssm can be installed yet fail to load against this torch)."""
    try:
        importlib.import_module(module)
    except Exception:  # noqa: BLE001 — any failure to load means "not available"
        return False
    return True


def resolve_backend(backend, u):
    """The backend `selective_scan` will run for this tensor: `auto` becomes a concrete name."""
    if backend == "auto":
        if u.is_cuda:
            return "cuda" if importable("mamba_ssm.ops.selective_scan_interface") else "chunked"
        return "cpu" if importable("numba") else "reference"
    if backend not in BACKENDS:
        raise ValueError(f"selective_scan backend {backend!r} is unknown; expected 'auto' or one of {sorted(BACKENDS)}")
    return backend


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, backend="auto"):
    """Run the scan with `backend` ("auto", "reference", "cpu", "chunked", "cuda")."""
    fn = BACKENDS[resolve_backend(backend, u)]
    return fn(u, delta, A, B, C, D=D, z=z, delta_bias=delta_bias, delta_softplus=delta_softplus)
