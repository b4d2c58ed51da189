"""Selective scan (Mamba's S6 recurrence) with interchangeable backends.

    h_t = exp(Δ_t A) h_{t-1} + Δ_t B_t u_t,     y_t = C_t · h_t + D u_t,     y ← y · SiLU(z)

Two entry points:
- `selective_scan`: the shapes of `mamba_ssm.selective_scan_fn`. u, delta, z: (B, D, L); A: (D, N);
  B, C: (B, N, L) or (B, G, N, L) with D divisible by G; D, delta_bias: (D,). Output (B, D, L).
- `ss2d_scan`: SS2D's four scan orders of an image in one call, channels last, as the model holds them.

Backends, all giving the same numbers (tests/test_ssm.py holds them equal to `reference`):
- `reference` (reference.py): a Python loop over time, the readable definition;
- `cpu` (cpu.py): numba kernels vectorised across channels, with a hand-written backward; the fast path
  on a CPU, and the only one that reads SS2D's orders by index arithmetic instead of flipped copies;
- `chunked` (chunked.py): pure-PyTorch parallel scan over chunks, for GPUs without mamba_ssm;
- `cuda` (cuda.py): mamba_ssm's fused kernel, when that package imports and the tensors are on a GPU.
`auto` picks cuda > chunked on a GPU, cpu (reference if numba is missing) on a CPU.

The backend is chosen at run time, never stored with a model: the `backend=` argument, else the innermost
`use_scan_backend(...)` context, else the environment variable MPIMAMBA_SCAN_BACKEND, else `auto`.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import importlib
import os

import torch

from .common import NUM_ORDERS, compute_dtype, grouped
from .cuda import MAMBA_SSM, importable, selective_scan_cuda
from .reference import selective_scan_reference

BACKEND_NAMES = ("reference", "cpu", "chunked", "cuda")
ENV_VAR = "MPIMAMBA_SCAN_BACKEND"
_chosen: contextvars.ContextVar[str | None] = contextvars.ContextVar("scan_backend", default=None)


def _cpu_module():
    try:  # import_module consults sys.modules, so a test can make the import fail
        cpu = importlib.import_module(f"{__name__}.cpu")
    except ImportError as err:
        raise RuntimeError(
            f"selective_scan backend 'cpu' needs numba ({err}); `pip install numba`, or use backend 'chunked'"
        ) from err
    return cpu


def _check_cpu(u):
    if u.is_cuda:
        raise ValueError("selective_scan backend 'cpu' needs CPU tensors; use 'cuda', 'chunked' or 'auto' on a GPU")
    return _cpu_module()


def selective_scan_cpu(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """The numba kernel on mamba_ssm's shapes: groups become the kernel's orders (all walking order 0)."""
    cpu = _check_cpu(u)
    dtype = u.dtype
    f32 = lambda t: None if t is None else t.float()  # noqa: E731
    u, delta, A, D, z, delta_bias = (f32(t) for t in (u, delta, A, D, z, delta_bias))
    B, C = grouped(f32(B)), grouped(f32(C))  # (B, G, N, L)
    batch, d_model, length = u.shape
    groups = B.shape[1]
    per = d_model // groups
    bias = delta_bias.view(groups, per) if delta_bias is not None else u.new_zeros(groups, per)
    channels_last = lambda t: t.view(batch, groups, per, length).permute(0, 3, 1, 2)  # noqa: E731  (B, L, G, E)
    y = cpu.scan_channels_last(
        channels_last(u), channels_last(delta), bias, A.view(groups, per, -1).transpose(1, 2),
        B.permute(0, 3, 1, 2), C.permute(0, 3, 1, 2), torch.arange(length).expand(groups, length), delta_softplus,
    )  # (B, L, G, E)
    y = y.permute(0, 2, 3, 1).reshape(batch, d_model, length)
    if D is not None:
        y = y + D[:, None] * u
    if z is not None:
        y = y * torch.nn.functional.silu(z)
    return y.to(dtype)


def selective_scan_chunked(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """Pure-PyTorch chunked parallel scan (any device)."""
    from .chunked import chunked_scan

    dtype = u.dtype
    cast = lambda t: None if t is None else t.to(compute_dtype(u))  # noqa: E731
    y = chunked_scan(cast(u), cast(delta), cast(A), grouped(cast(B)), grouped(cast(C)), cast(D), cast(z),
                     cast(delta_bias), delta_softplus)
    return y.to(dtype)


BACKENDS = {
    "reference": selective_scan_reference,
    "cpu": selective_scan_cpu,
    "chunked": selective_scan_chunked,
    "cuda": selective_scan_cuda,
}


def _check_name(name: str, where: str) -> str:
    if name != "auto" and name not in BACKENDS:
        raise ValueError(f"selective_scan backend {name!r} ({where}) is unknown; "
                         f"expected 'auto' or one of {', '.join(BACKEND_NAMES)}")
    return name


def chosen_backend() -> str:
    """The backend asked for by the innermost `use_scan_backend` context, else MPIMAMBA_SCAN_BACKEND, else auto."""
    name = _chosen.get()
    if name is not None:
        return name
    return _check_name(os.environ.get(ENV_VAR, "auto") or "auto", f"environment variable {ENV_VAR}")


@contextlib.contextmanager
def use_scan_backend(name: str | None):
    """Run the scans inside the block with backend `name` (None: leave the current choice)."""
    if name is None:
        yield
        return
    token = _chosen.set(_check_name(name, "use_scan_backend"))
    try:
        yield
    finally:
        _chosen.reset(token)


def resolve_backend(backend: str | None, u: torch.Tensor) -> str:
    """The concrete backend a scan of `u` runs: None means `chosen_backend()`, `auto` picks by device."""
    backend = _check_name(backend, "backend argument") if backend is not None else chosen_backend()
    if backend == "auto":
        if u.is_cuda:
            return "cuda" if importable(MAMBA_SSM) else "chunked"
        return "cpu" if importable("numba") else "reference"
    return backend


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, backend=None):
    """Run the scan with `backend` ("auto", "reference", "cpu", "chunked", "cuda"; None: the run-time choice)."""
    fn = BACKENDS[resolve_backend(backend, u)]
    return fn(u, delta, A, B, C, D=D, z=z, delta_bias=delta_bias, delta_softplus=delta_softplus)


# ---------------------------------------------------------------- SS2D's four orders in one call


@functools.lru_cache(maxsize=64)
def order_positions(height: int, width: int) -> torch.Tensor:
    """(4, H·W) long: the row-major pixel index visited at each step of the rows, columns, rows reversed
    and columns reversed orders; the cpu kernel reads these, the other backends gather with them."""
    pixels = torch.arange(height * width).view(height, width)
    rows, cols = pixels.flatten(), pixels.t().flatten()
    return torch.stack([rows, cols, rows.flip(0), cols.flip(0)])


def ss2d_scan(u, delta, A, B, C, D, delta_bias, height, width, backend=None):
    """Σ over SS2D's four orders of the scan of an image, with Δ = softplus(δ + bias).

    u: (B, L, E) pixels in row-major order, channels last (L = height·width); delta: (B, L, K, E) the
    raw Δ of each order at each pixel; A: (K, E, N); B, C: (B, L, K, N); D, delta_bias: (K, E), K = 4.
    Returns (B, L, E). The `cpu` backend walks the orders by index arithmetic; the others get each order's
    sequence gathered into (B, K·E, L) and scattered back.
    """
    name = resolve_backend(backend, u)
    dtype = u.dtype
    if name == "cpu":
        cpu = _check_cpu(u)
        u, delta, A, B, C, D, delta_bias = (t.float() for t in (u, delta, A, B, C, D, delta_bias))
        y = cpu.scan_channels_last(u[:, :, None], delta, delta_bias, A.transpose(1, 2), B, C,
                                   order_positions(height, width), True)  # (B, L, K, E)
        return (y.sum(2) + u * D.sum(0)).to(dtype)
    batch, length, channels = u.shape
    pos = order_positions(height, width).to(u.device)  # (K, L)
    # each order's sequence: seq[:, k, :, t] = the value at pixel pos[k, t], (B, L, K, C) -> (B, K, C, L)
    ordered = lambda t: torch.stack([t[:, pos[k], k].transpose(1, 2) for k in range(NUM_ORDERS)], 1)  # noqa: E731
    xs = ordered(u[:, :, None].expand(-1, -1, NUM_ORDERS, -1))  # (B, K, E, L)
    y = selective_scan(xs.flatten(1, 2), ordered(delta).flatten(1, 2), A.flatten(0, 1), ordered(B), ordered(C),
                       D.flatten(), delta_bias=delta_bias.flatten(), delta_softplus=True, backend=name)
    y = y.view(batch, NUM_ORDERS, channels, length)
    out = torch.zeros_like(u)
    for k in range(NUM_ORDERS):  # back to pixel positions, summed over the orders
        out = out.index_add(1, pos[k], y[:, k].transpose(1, 2))
    return out.to(dtype)
