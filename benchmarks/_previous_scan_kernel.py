"""A pinned copy of the `cpu` selective-scan backend as it was before issue 10 (src/mpimamba/models/ssm_cpu.py
at commit 5174b83), kept only so that benchmarks/step.py can time today's kernel against it in one run.
Not part of the package; not maintained. Its original docstring follows.

The `cpu` backend of the selective scan: numba kernels with a hand-written backward pass.

Why a kernel: on a CPU every pure-PyTorch parallel scan materialises the expanded state (B, D, L, N) and
loses to the plain loop. Here each (batch, channel) row runs the recurrence with its N-dimensional state in
a small local array, rows in parallel (`prange`), so memory traffic is the inputs and the output only.

Precision: inputs, outputs, the state h and the adjoint λ are float32 (as in mamba_ssm's CUDA kernel), and
so are the short sums over the N state entries; the long sums over time (dA, dD) accumulate in float64.

Memory (beyond inputs, output and gradients of the inputs):
- forward: checkpoints of the state every `SEGMENT` steps, (B, D, ceil(L / SEGMENT), N) float32 — with
  N = 16 and SEGMENT = 64 that is a quarter of the size of u — kept for the backward pass;
- backward: per worker (SEGMENT + 1, N) recomputed states and (SEGMENT, N) decays, plus partial sums of
  dB and dC, (B, G, P, L, N) float32 with P small (≈ 2 × threads / (B·G), at most D / G), because the channels that
  share a B/C group would otherwise race on the same gradient entries; P = 1 when there is one row per
  worker already. Partial sums of dA (B, D, N) and dD (B, D) float64.
Threads: the kernels follow torch.get_num_threads() (capped by NUMBA_NUM_THREADS), and leave torch's count
as it was (numba's OpenMP threading layer would otherwise overwrite it).
"""

from __future__ import annotations

import math

import numba
import numpy as np
import torch
from numba import prange

SEGMENT = 64  # steps between state checkpoints; the backward recomputes one segment at a time


@numba.njit(inline="always")
def _silu_and_grad(z):
    """SiLU(z) and its derivative."""
    s = 1.0 / (1.0 + math.exp(-z))
    return z * s, s * (1.0 + z * (1.0 - s))


@numba.njit(inline="always")
def _exp_into(x, out, bits):
    """out[:] = exp(x[:]) for float32 vectors, in plain arithmetic so LLVM vectorises the loop.

    Why not np.exp: without Intel's SVML numba calls the scalar libm expf per element, which made the scan
    ~2x slower. Here exp(x) = 2^k · p(r) with k = round(x / ln 2), r = x − k ln 2 (|r| ≤ ln2 / 2, ln 2 split
    in two parts so k ln 2 is exact), p the degree-8 Taylor polynomial (relative error ~1e-7, float32's
    resolution), and 2^k built from its exponent bits. x is clamped to [−87, 88], float32's normal range:
    exp(−87) ≈ 1.6e-38 stands in for anything smaller (a decayed state), and Δ·A never exceeds 88 for A ≤ 0.
    `bits` is int32 scratch of the same length.
    """
    for n in range(x.shape[0]):
        v = min(max(x[n], np.float32(-87.0)), np.float32(88.0))
        k = np.floor(v * np.float32(1.4426950408889634) + np.float32(0.5))
        r = v - k * np.float32(0.693359375) - k * np.float32(-2.12194440e-4)
        # Horner, written out: a loop over a tuple of coefficients here stops LLVM vectorising over n.
        p = np.float32(1.0 / 40320.0) * r + np.float32(1.0 / 5040.0)
        p = p * r + np.float32(1.0 / 720.0)
        p = p * r + np.float32(1.0 / 120.0)
        p = p * r + np.float32(1.0 / 24.0)
        p = p * r + np.float32(1.0 / 6.0)
        p = p * r + np.float32(0.5)
        p = p * r + np.float32(1.0)
        p = p * r + np.float32(1.0)
        bits[n] = (np.int32(k) + 127) << 23  # the float32 whose value is 2^k
        out[n] = p
    scale = bits.view(np.float32)
    for n in range(x.shape[0]):
        out[n] *= scale[n]


@numba.njit(parallel=True, fastmath=False, cache=True)
def _forward_kernel(u, delta, A, Bt, Ct, Dv, z, has_z, out, ckpt):
    """out = scan(u); also writes the state before every SEGMENT-th step into ckpt.

    u, delta, z, out: (B, D, L); A: (D, N); Bt, Ct: (B, G, L, N) (time-major so the inner loops over N read
    contiguous memory); Dv: (D,); ckpt: (B, D, S, N) with S = ceil(L / SEGMENT).
    """
    batch, d_model, length = u.shape
    n_state = A.shape[1]
    per_group = d_model // Bt.shape[1]
    for row in prange(batch * d_model):
        b = row // d_model
        d = row % d_model
        g = d // per_group
        h = np.zeros(n_state, np.float32)  # the state stays in this small array for the whole row
        decay = np.empty(n_state, np.float32)
        bits = np.empty(n_state, np.int32)
        for t in range(length):
            if t % SEGMENT == 0:
                ckpt[b, d, t // SEGMENT, :] = h
            dt = delta[b, d, t]
            for n in range(n_state):
                decay[n] = dt * A[d, n]
            _exp_into(decay, decay, bits)
            x = dt * u[b, d, t]
            for n in range(n_state):
                h[n] = decay[n] * h[n] + x * Bt[b, g, t, n]
            y = Dv[d] * u[b, d, t]
            for n in range(n_state):
                y += h[n] * Ct[b, g, t, n]
            if has_z:
                y *= _silu_and_grad(z[b, d, t])[0]
            out[b, d, t] = y


@numba.njit(parallel=True, fastmath=False, cache=True)
def _backward_kernel(u, delta, A, Bt, Ct, Dv, z, has_z, ckpt, gout, parts,
                     du, ddelta, dz, dA_part, dD_part, dB_part, dC_part):
    """Adjoint recurrence, run backwards in time, one segment at a time.

    With λ_t = ∂loss/∂h_t (total, through all later steps) and gy_t = ∂loss/∂y_t:
        λ_t = C_t gy_t + exp(Δ_{t+1} A) λ_{t+1}
        dC_t = gy_t h_t,   dB_t = λ_t Δ_t u_t,   du_t = D gy_t + Σ_n λ_t Δ_t B_t
        dΔ_t = Σ_n λ_t (A exp(Δ_t A) h_{t-1} + B_t u_t),   dA = Σ_t λ_t Δ_t exp(Δ_t A) h_{t-1}
    The states h and decays exp(Δ_t A) of a segment are recomputed from the checkpoint at its start. Work
    items are (batch, group, part): each owns a slice of the group's channels and its own rows of
    dB_part/dC_part (B, G, P, L, N), so no two threads write the same entry.
    """
    batch, d_model, length = u.shape
    n_state = A.shape[1]
    n_groups = Bt.shape[1]
    per_group = d_model // n_groups
    per_part = (per_group + parts - 1) // parts
    n_segments = ckpt.shape[2]
    for item in prange(batch * n_groups * parts):
        b = item // (n_groups * parts)
        g = (item // parts) % n_groups
        p = item % parts
        hbuf = np.empty((SEGMENT + 1, n_state), np.float32)  # hbuf[i] = h at step t0 + i - 1
        dbuf = np.empty((SEGMENT, n_state), np.float32)  # dbuf[i] = exp(Δ A) at step t0 + i
        bits = np.empty(n_state, np.int32)
        lam = np.empty(n_state, np.float32)
        dA_acc = np.empty(n_state, np.float64)
        first = g * per_group + p * per_part
        for d in range(first, min(first + per_part, (g + 1) * per_group)):
            lam[:] = 0.0
            dA_acc[:] = 0.0
            dD_acc = 0.0
            for s in range(n_segments - 1, -1, -1):
                t0 = s * SEGMENT
                t1 = min(t0 + SEGMENT, length)
                # Recompute the decays and states of this segment from its checkpoint.
                hbuf[0, :] = ckpt[b, d, s, :]
                for t in range(t0, t1):
                    i = t - t0
                    dt = delta[b, d, t]
                    for n in range(n_state):
                        dbuf[i, n] = dt * A[d, n]
                    _exp_into(dbuf[i], dbuf[i], bits)
                    x = dt * u[b, d, t]
                    for n in range(n_state):
                        hbuf[i + 1, n] = dbuf[i, n] * hbuf[i, n] + x * Bt[b, g, t, n]
                # Walk the segment backwards.
                for t in range(t1 - 1, t0 - 1, -1):
                    i = t - t0
                    dt = delta[b, d, t]
                    ut = u[b, d, t]
                    gy = gout[b, d, t]
                    if has_z:
                        y = Dv[d] * ut  # y before gating is needed for dz
                        for n in range(n_state):
                            y += hbuf[i + 1, n] * Ct[b, g, t, n]
                        silu, dsilu = _silu_and_grad(z[b, d, t])
                        dz[b, d, t] = gy * y * dsilu
                        gy = gy * silu
                    dD_acc += gy * ut
                    du_t = gy * Dv[d]
                    ddt = np.float32(0.0)
                    for n in range(n_state):
                        lam[n] += Ct[b, g, t, n] * gy
                        dC_part[b, g, p, t, n] += gy * hbuf[i + 1, n]
                        dB_part[b, g, p, t, n] += lam[n] * dt * ut
                        du_t += lam[n] * dt * Bt[b, g, t, n]
                        decayed = lam[n] * dbuf[i, n] * hbuf[i, n]  # λ_t exp(Δ_t A) h_{t-1}
                        ddt += A[d, n] * decayed + lam[n] * Bt[b, g, t, n] * ut
                        dA_acc[n] += dt * decayed
                        lam[n] *= dbuf[i, n]  # carry λ_t back through exp(Δ_t A) to step t - 1
                    du[b, d, t] = du_t
                    ddelta[b, d, t] = ddt
            dA_part[b, d, :] = dA_acc
            dD_part[b, d] = dD_acc


def _threads():
    """Threads for the kernels: torch's count, within numba's pool (NUMBA_NUM_THREADS)."""
    return min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)


def _launch(kernel, *args):
    """Run a kernel on `_threads()` threads and give torch back its thread count: numba's OpenMP layer
    shares the OpenMP runtime with torch, and its launch would otherwise leave torch on numba's count."""
    torch_threads = torch.get_num_threads()
    numba.set_num_threads(_threads())
    try:
        kernel(*args)
    finally:
        torch.set_num_threads(torch_threads)


def _work_parts(batch, n_groups, per_group):
    """How many slices each (batch, group) is cut into so every thread has a few work items."""
    want = 2 * _threads()
    return max(1, min(per_group, -(-want // (batch * n_groups))))


class SelectiveScanCPU(torch.autograd.Function):
    """float32 scan through the numba kernels. delta arrives with bias and softplus already applied
    (autograd differentiates those), B and C as (B, G, N, L)."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z):
        batch, d_model, length = u.shape
        Bt = B.transpose(-1, -2).contiguous()  # (B, G, L, N)
        Ct = C.transpose(-1, -2).contiguous()
        Dv = D.contiguous() if D is not None else u.new_zeros(d_model)
        zz = z.contiguous() if z is not None else u.new_zeros(1, 1, 1)
        u, delta, A = u.contiguous(), delta.contiguous(), A.contiguous()
        out = torch.empty_like(u)
        ckpt = u.new_empty(batch, d_model, -(-length // SEGMENT), A.shape[1])  # (B, D, S, N)
        _launch(_forward_kernel, u.numpy(), delta.numpy(), A.numpy(), Bt.numpy(), Ct.numpy(), Dv.numpy(),
                zz.numpy(), z is not None, out.numpy(), ckpt.numpy())
        ctx.save_for_backward(u, delta, A, Bt, Ct, Dv, zz, ckpt)
        ctx.has_D, ctx.has_z = D is not None, z is not None
        return out

    @staticmethod
    def backward(ctx, gout):
        u, delta, A, Bt, Ct, Dv, zz, ckpt = ctx.saved_tensors
        batch, n_groups, length, n_state = Bt.shape
        parts = _work_parts(batch, n_groups, u.shape[1] // n_groups)
        du, ddelta = torch.empty_like(u), torch.empty_like(u)
        dz = torch.empty_like(u) if ctx.has_z else u.new_empty(1, 1, 1)
        dA_part = torch.empty(batch, *A.shape, dtype=torch.float64)  # (B, D, N)
        dD_part = torch.empty(batch, u.shape[1], dtype=torch.float64)  # (B, D)
        dB_part = u.new_zeros(batch, n_groups, parts, length, n_state)  # (B, G, P, L, N)
        dC_part = u.new_zeros(batch, n_groups, parts, length, n_state)
        _launch(_backward_kernel, u.numpy(), delta.numpy(), A.numpy(), Bt.numpy(), Ct.numpy(), Dv.numpy(),
                zz.numpy(), ctx.has_z, ckpt.numpy(), gout.contiguous().numpy(), parts,
                du.numpy(), ddelta.numpy(), dz.numpy(), dA_part.numpy(), dD_part.numpy(),
                dB_part.numpy(), dC_part.numpy())
        dB = dB_part.sum(2).transpose(-1, -2)  # (B, G, N, L)
        dC = dC_part.sum(2).transpose(-1, -2)
        dA = dA_part.sum(0).float()
        dD = dD_part.sum(0).float() if ctx.has_D else None
        return du, ddelta, dA, dB, dC, dD, (dz if ctx.has_z else None)


def selective_scan_cpu(u, delta, A, B, C, D=None, z=None):
    """u, delta (bias and softplus applied), z: (B, D, L); A: (D, N); B, C: (B, G, N, L); D: (D,)."""
    return SelectiveScanCPU.apply(u, delta, A, B, C, D, z)
