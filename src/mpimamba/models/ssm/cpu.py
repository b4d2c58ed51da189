"""The `cpu` backend of the selective scan: numba kernels vectorised across channels, hand-written backward.

Layout: channels last. Every tensor the kernels read is (batch, position, order, channel) or
(batch, position, order, state), so at one step of one scan order the E channels of a pixel are contiguous
and the inner loops over channels compile to SIMD instructions (the channels are independent recurrences:
they are the vector lanes). A work item is one (batch, order) pair; its state h is an (N, E) array that
stays in L1 cache for the whole sequence.

Scan orders by index: step t of order k reads and writes pixel `positions[k, t]` (rows, columns, rows
reversed, columns reversed: `ssm.order_positions`), so SS2D's four orders read the same (B, H·W, E)
activations in place; no flipped or transposed copy is made. The generic mamba_ssm-shaped API walks every
group in plain order (positions[k, t] = t).

What the kernels compute, per order k, with Δ_t = softplus(δ_t + bias) (or δ_t + bias without softplus):
    h_t = exp(Δ_t A) h_{t-1} + Δ_t B_t u_t,      y_t = C_t · h_t
(no D skip and no z gate: the callers add those in PyTorch, where autograd differentiates them). The
softplus is fused because in PyTorch it was a tenth of an MPI-Mamba inference.

Precision: float32 everywhere as in mamba_ssm's CUDA kernel, except the long sums over time (dA, dbias),
which add float32 partial sums of one segment into float64 totals. exp, log1p and the softplus are
polynomial approximations accurate to a few float32 ulps (below).

Memory beyond inputs and outputs: when a backward will follow, the forward keeps the state every `SEGMENT`
steps, (B, K, S, N, E) float32 with S = ceil(L / SEGMENT) — N / SEGMENT = half the size of u per order
(nothing in inference); the backward recomputes one segment at a time in per-item buffers of
(SEGMENT + 1, N, E) states and (SEGMENT, N, E) decays.

Threads: numba's pool size is set once per process (`mpimamba.threads`), never per call.

Where they were built (x86-64 with AVX2 or AVX-512; N = 16 and channels divisible by the vector width)
the C kernels of scan_kernels.c run instead of these two (native.py): the same recurrences with the
state tile in registers, forward+backward about 1.5× as fast (docs/methods.md).
"""

from __future__ import annotations

import numba
import numpy as np
import torch
from llvmlite import ir
from numba import prange, types
from numba.extending import intrinsic
from torch.autograd.function import once_differentiable

from ...threads import start_numba_pool, use_configured_threads
from . import native

SEGMENT = 32  # steps between state checkpoints; the backward recomputes one segment at a time

# reassoc lets LLVM vectorise the sums over channels; contract allows fused multiply-adds. No nnan/ninf:
# infinities and NaNs must propagate as IEEE says.
_FAST = {"reassoc", "contract", "nsz"}


LOG2E = 1.4426950408889634
# 2^r ≈ Σ c_i r^i on [−1/2, 1/2]: a least-squares fit of the relative error at 4000 Chebyshev nodes
# (relative error 2.2e-7 evaluated in float32, within two ulps). Fitted in this project, see _exp2.
_P0, _P1, _P2 = np.float32(1.0000001192092896), np.float32(0.6931469440460205), np.float32(0.24022121727466583)
_P3, _P4, _P5 = np.float32(0.05550742521882057), np.float32(0.009675459936261177), np.float32(0.0013266970636323094)


@intrinsic
def _float_from_bits(typingctx, bits):
    """The float32 whose IEEE-754 bit pattern is the int32 `bits` (an LLVM bitcast: free, and vectorisable)."""
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())
    return types.float32(types.int32), codegen


@numba.njit(inline="always", fastmath=_FAST)
def _exp2(x):
    """2^x in float32 arithmetic that LLVM vectorises inside the callers' loops over channels.

    numba has no vector exp without Intel's SVML (it calls the scalar libm expf per element), so:
    2^x = 2^k · 2^r with k = round(x), r = x − k ∈ [−1/2, 1/2] (exact in float32), 2^r by the degree-5
    polynomial above, and 2^k from its exponent bits. Callers pass x = Δ·A·log2(e) with A pre-scaled, so
    exp(Δ A) costs one multiply, one rounding and five fused multiply-adds. x is clamped to [−126, 127],
    float32's normal range: 2^−126 ≈ 1.2e-38 stands in for anything smaller (a fully decayed state; no
    denormal decays, which are slow), and 2^127 for anything larger (reachable only with Δ·A > 0, i.e.
    without softplus and with a negative Δ; a NaN input still gives NaN).
    """
    v = min(max(x, np.float32(-126.0)), np.float32(127.0))
    k = np.floor(v + np.float32(0.5))
    r = v - k
    p = ((((_P5 * r + _P4) * r + _P3) * r + _P2) * r + _P1) * r + _P0
    return p * _float_from_bits((np.int32(k) + np.int32(127)) << np.int32(23))


@numba.njit(inline="always", fastmath=_FAST)
def _log1p_unit(w):
    """log(1 + w) for w in [0, 1]: 2 atanh(s) with s = w / (2 + w) ∈ [0, 1/3], its series to s^11
    (truncation ≤ 1.5e-7 relative, at w = 1)."""
    s = w / (np.float32(2.0) + w)
    s2 = s * s
    series = ((((np.float32(1 / 11) * s2 + np.float32(1 / 9)) * s2 + np.float32(1 / 7)) * s2
               + np.float32(1 / 5)) * s2 + np.float32(1 / 3)) * s2 + np.float32(1.0)
    return np.float32(2.0) * s * series


@numba.njit(inline="always", fastmath=_FAST)
def _softplus_and_slope(v):
    """softplus(v) = max(v, 0) + log1p(exp(−|v|)) and its derivative sigmoid(v), from one exponential."""
    w = _exp2(-abs(v) * np.float32(LOG2E))  # exp(−|v|) ∈ (0, 1]
    inv = np.float32(1.0) / (np.float32(1.0) + w)
    return max(v, np.float32(0.0)) + _log1p_unit(w), inv if v >= 0 else w * inv


@numba.njit(inline="always", fastmath=_FAST)
def _step_delta(raw, bias, softplus, dt, slope):
    """dt[:] = Δ from the raw δ row and the bias row; slope[:] = dΔ/dδ (1 without softplus)."""
    for e in range(dt.shape[0]):
        v = raw[e] + bias[e]
        if softplus:
            dt[e], slope[e] = _softplus_and_slope(v)
        else:
            dt[e], slope[e] = v, np.float32(1.0)


@numba.njit(parallel=True, fastmath=_FAST, cache=True)
def _forward_kernel(u, delta, bias, softplus, A, Bm, Cm, positions, y, ckpt, save):
    """y[b, p, k] = scan_k(u)[p]; ckpt[b, k, s] = the state before step s·SEGMENT of order k.

    u: (B, L, Ku, E) with Ku = 1 (one input shared by all orders) or K; delta: (B, L, K, E), the raw δ;
    bias: (K, E); A: (K, N, E); Bm, Cm: (B, L, K, N); positions: (K, L) the pixel of each step of each
    order; y: (B, L, K, E); ckpt: (B, K, S, N, E), written only when `save` (a backward will follow).
    Rows (1-D views over E or N) are taken once per step so the inner loops see plain contiguous vectors.
    """
    batch, length, n_orders, n_ch = delta.shape
    n_state = A.shape[1]
    shared_u = u.shape[2] == 1
    for item in prange(batch * n_orders):
        b = item // n_orders
        k = item % n_orders
        ku = 0 if shared_u else k
        A2k = A[k] * np.float32(LOG2E)  # exp(Δ A) = 2^(Δ A2)
        h = np.zeros((n_state, n_ch), np.float32)
        x = np.empty(n_ch, np.float32)
        dt = np.empty(n_ch, np.float32)
        slope = np.empty(n_ch, np.float32)
        for t in range(length):
            if save and t % SEGMENT == 0:
                ckpt[b, k, t // SEGMENT] = h
            p = positions[k, t]
            ut, yt = u[b, p, ku], y[b, p, k]
            bt, ct = Bm[b, p, k], Cm[b, p, k]
            _step_delta(delta[b, p, k], bias[k], softplus, dt, slope)
            for e in range(n_ch):
                x[e] = dt[e] * ut[e]
                yt[e] = 0.0
            for n in range(n_state):
                hn, an, bn, cn = h[n], A2k[n], bt[n], ct[n]
                for e in range(n_ch):
                    v = _exp2(dt[e] * an[e]) * hn[e] + x[e] * bn
                    hn[e] = v
                    yt[e] += v * cn


@numba.njit(parallel=True, fastmath=_FAST, cache=True)
def _backward_kernel(u, delta, bias, softplus, A, Bm, Cm, positions, ckpt, gy,
                     du, ddelta, dB, dC, dA_part, dbias_part):
    """Adjoint recurrence, backwards in time, one segment at a time.

    With λ_t = ∂loss/∂h_t (through all later steps) and g_t = ∂loss/∂y_t:
        λ_t = C_t g_t + exp(Δ_{t+1} A) λ_{t+1}
        dC_t = Σ_e g_t h_t,   dB_t = Σ_e λ_t Δ_t u_t,   du_t = Δ_t Σ_n λ_t B_t
        dΔ_t = Σ_n λ_t (A exp(Δ_t A) h_{t-1} + B_t u_t),   dA = Σ_t λ_t Δ_t exp(Δ_t A) h_{t-1}
    then dδ = dΔ · softplus'(δ + bias) and dbias = Σ_t dδ. The states and decays of a segment are
    recomputed from its checkpoint. Item (b, k) owns du[b, :, k], ddelta[b, :, k], dB[b, :, k],
    dC[b, :, k], dA_part[b, k] and dbias_part[b, k] (float64), so no two threads write the same entry. gy: (B, L, Kg, E) with Kg = 1 (the orders' outputs were summed) or K.
    """
    batch, length, n_orders, n_ch = delta.shape
    n_state = A.shape[1]
    shared_u = u.shape[2] == 1
    shared_g = gy.shape[2] == 1
    n_segments = ckpt.shape[2]
    for item in prange(batch * n_orders):
        b = item // n_orders
        k = item % n_orders
        ku = 0 if shared_u else k
        kg = 0 if shared_g else k
        Ak = A[k]
        A2k = Ak * np.float32(LOG2E)
        hbuf = np.empty((SEGMENT + 1, n_state, n_ch), np.float32)  # hbuf[i] = h before step t0 + i
        dbuf = np.empty((SEGMENT, n_state, n_ch), np.float32)  # dbuf[i] = exp(Δ A) at step t0 + i
        xbuf = np.empty((SEGMENT, n_ch), np.float32)  # Δ u
        dtbuf = np.empty((SEGMENT, n_ch), np.float32)  # Δ
        slopebuf = np.empty((SEGMENT, n_ch), np.float32)  # dΔ/dδ
        dbias_seg = np.empty(n_ch, np.float32)
        dbias_tot = np.zeros(n_ch, np.float64)
        lam = np.zeros((n_state, n_ch), np.float32)
        dA_seg = np.empty((n_state, n_ch), np.float32)
        dA_tot = np.zeros((n_state, n_ch), np.float64)
        sum_lb = np.empty(n_ch, np.float32)  # Σ_n λ B
        sum_ad = np.empty(n_ch, np.float32)  # Σ_n A λ exp(ΔA) h_{t-1}
        for s in range(n_segments - 1, -1, -1):
            t0 = s * SEGMENT
            t1 = min(t0 + SEGMENT, length)
            hbuf[0] = ckpt[b, k, s]
            for t in range(t0, t1):  # recompute the segment's decays and states
                i = t - t0
                p = positions[k, t]
                ut, bt = u[b, p, ku], Bm[b, p, k]
                dt, xi = dtbuf[i], xbuf[i]
                _step_delta(delta[b, p, k], bias[k], softplus, dt, slopebuf[i])
                for e in range(n_ch):
                    xi[e] = dt[e] * ut[e]
                for n in range(n_state):
                    hp, hn, dn, an, bn = hbuf[i, n], hbuf[i + 1, n], dbuf[i, n], A2k[n], bt[n]
                    for e in range(n_ch):
                        de = _exp2(dt[e] * an[e])
                        dn[e] = de
                        hn[e] = de * hp[e] + xi[e] * bn
            dA_seg[:] = 0.0
            dbias_seg[:] = 0.0
            for t in range(t1 - 1, t0 - 1, -1):  # walk it backwards
                i = t - t0
                p = positions[k, t]
                dt, slope, ut, gt = dtbuf[i], slopebuf[i], u[b, p, ku], gy[b, p, kg]
                bt, ct = Bm[b, p, k], Cm[b, p, k]
                xi = xbuf[i]
                sum_lb[:] = 0.0
                sum_ad[:] = 0.0
                for n in range(n_state):
                    bn, cn = bt[n], ct[n]
                    ln, dn, an, dAn = lam[n], dbuf[i, n], Ak[n], dA_seg[n]
                    hp, hn = hbuf[i, n], hbuf[i + 1, n]
                    acc_c = np.float32(0.0)
                    acc_b = np.float32(0.0)
                    for e in range(n_ch):
                        acc_c += gt[e] * hn[e]
                        lt = ln[e] + cn * gt[e]  # λ_t
                        acc_b += lt * xi[e]
                        sum_lb[e] += lt * bn
                        decayed = lt * dn[e] * hp[e]  # λ_t exp(Δ_t A) h_{t-1}
                        sum_ad[e] += an[e] * decayed
                        dAn[e] += dt[e] * decayed
                        ln[e] = lt * dn[e]  # carried back through exp(Δ_t A) to step t − 1
                    dC[b, p, k, n] = acc_c
                    dB[b, p, k, n] = acc_b
                dut, ddt = du[b, p, k], ddelta[b, p, k]
                for e in range(n_ch):
                    dut[e] = sum_lb[e] * dt[e]
                    g_raw = (sum_ad[e] + sum_lb[e] * ut[e]) * slope[e]
                    ddt[e] = g_raw
                    dbias_seg[e] += g_raw
            for n in range(n_state):
                for e in range(n_ch):
                    dA_tot[n, e] += dA_seg[n, e]
            for e in range(n_ch):
                dbias_tot[e] += dbias_seg[e]
        dA_part[b, k] = dA_tot
        dbias_part[b, k] = dbias_tot


def _check_shapes(u, delta, bias, A, B, C, positions):
    """The kernels index without bounds checks: refuse inconsistent shapes before they run."""
    batch, length, n_orders, n_ch = delta.shape
    n_state = A.shape[1]
    expected = {"u": (batch, length, u.shape[2], n_ch), "bias": (n_orders, n_ch), "A": (n_orders, n_state, n_ch),
                "B": (batch, length, n_orders, n_state), "C": (batch, length, n_orders, n_state),
                "positions": (n_orders, length)}
    for name, t in zip(expected, (u, bias, A, B, C, positions)):
        if tuple(t.shape) != expected[name]:
            raise ValueError(f"selective scan: {name} has shape {tuple(t.shape)}, expected {expected[name]}")
    if u.shape[2] not in (1, n_orders):
        raise ValueError(f"selective scan: u has {u.shape[2]} orders, expected 1 or {n_orders}")
    if length and (int(positions.min()) < 0 or int(positions.max()) >= length):
        raise ValueError(f"selective scan: positions must lie in [0, {length})")


class _ScanCPU(torch.autograd.Function):
    """float32 channels-last scan. u (B, L, Ku, E); delta (B, L, K, E) the raw δ; bias (K, E);
    A (K, N, E); B, C (B, L, K, N); positions (K, L) -> y (B, L, K, E)."""

    @staticmethod
    def forward(ctx, u, delta, bias, A, B, C, positions, softplus):
        u, delta, bias, A, B, C = (t.contiguous() for t in (u, delta, bias, A, B, C))
        _check_shapes(u, delta, bias, A, B, C, positions)
        use_configured_threads()
        batch, length, n_orders, n_ch = delta.shape
        y = delta.new_empty(batch, length, n_orders, n_ch)
        save = any(ctx.needs_input_grad)  # without a backward to come (inference) no checkpoints are kept
        segments = -(-length // SEGMENT) if save else 0
        ckpt = delta.new_empty(batch, n_orders, segments, A.shape[1], n_ch)  # (B, K, S, N, E)
        pos = positions.contiguous().numpy().astype(np.int64, copy=False)
        if native.usable(A.shape[1], n_ch):  # the C kernel: same recurrence, state tile in registers
            native.forward(u, delta, bias, softplus, A, B, C, pos, y, ckpt, save)
        else:
            _forward_kernel(u.numpy(), delta.numpy(), bias.numpy(), softplus, A.numpy(), B.numpy(), C.numpy(),
                            pos, y.numpy(), ckpt.numpy(), save)
        ctx.save_for_backward(u, delta, bias, A, B, C, ckpt)
        ctx.positions, ctx.softplus = pos, softplus
        return y

    @staticmethod
    @once_differentiable  # the backward is a kernel, not differentiable itself
    def backward(ctx, gy):
        use_configured_threads()
        u, delta, bias, A, B, C, ckpt = ctx.saved_tensors
        batch = delta.shape[0]
        if gy.stride(2) == 0:  # the caller summed the orders: one gradient, broadcast over them
            gy = gy[:, :, :1]
        du_per_order = torch.empty_like(delta)  # (B, L, K, E)
        ddelta = torch.empty_like(delta)
        dB, dC = torch.empty_like(B), torch.empty_like(C)
        dA_part = torch.empty(batch, *A.shape, dtype=torch.float64)  # (B, K, N, E)
        dbias_part = torch.empty(batch, *bias.shape, dtype=torch.float64)  # (B, K, E)
        gy = gy.contiguous()
        if native.usable(A.shape[1], delta.shape[3]):  # the C kernel: same numbers, faster (docs/methods.md)
            native.backward(u, delta, bias, ctx.softplus, A, B, C, ctx.positions, ckpt, gy, du_per_order,
                            ddelta, dB, dC, dA_part, dbias_part)
        else:
            _backward_kernel(u.numpy(), delta.numpy(), bias.numpy(), ctx.softplus, A.numpy(), B.numpy(),
                             C.numpy(), ctx.positions, ckpt.numpy(), gy.numpy(), du_per_order.numpy(),
                             ddelta.numpy(), dB.numpy(), dC.numpy(), dA_part.numpy(), dbias_part.numpy())
        du = du_per_order.sum(2, keepdim=True) if u.shape[2] == 1 else du_per_order
        return du, ddelta, dbias_part.sum(0).float(), dA_part.sum(0).float(), dB, dC, None, None


def scan_channels_last(u, delta, bias, A, B, C, positions, softplus):
    """The kernel's own layout (see `_ScanCPU`); float32 in, float32 out."""
    return _ScanCPU.apply(u, delta, bias, A, B, C, positions, softplus)


start_numba_pool()  # once per process, here rather than at the first kernel call (see mpimamba.threads)
