"""The `chunked` backend of the selective scan: a parallel scan in pure PyTorch.

The sequence is cut into chunks of `CHUNK` steps, scanned one after the other with the state carried from
chunk to chunk; inside a chunk all steps are computed at once by recursive doubling (Hillis–Steele): after
the round with offset o every position t holds

    x_t = Σ_{t-2o < s ≤ t} exp(A Σ_{s<r≤t} Δ_r) Δ_s B_s u_s,      a_t = exp(A Σ_{t-2o < r ≤ t} Δ_r),

and the next round adds a_t · x_{t-2o}. The decay of a window is the exponential of a log-space segment sum
of Δ·A, but it is formed as a product of per-step factors exp(Δ_r A) — never as exp(S_t) / exp(S_s) or
exp(S_t − S_s) from two running sums, which would overflow or cancel. With Δ ≥ 0 and A ≤ 0 (Mamba's
parameterisation) every factor lies in [0, 1], so the scan stays finite however large Δ·A gets: long decays
just underflow to 0. The state entering the chunk is folded into its first step.

Why doubling and not the quadratic "segment-sum matrix" form (Mamba-2's SSD): with a state per channel and
per n the decay matrix is (B, D, N, K, K), K exponentials per step instead of one; measured on the 2-core
CPU it was ~6× slower than mambapy's scan, while doubling is faster than it (benchmarks/scan.py).

Memory beyond inputs and output: a few (B, D, N, K) tensors for the chunk in flight, independent of L (Δ's
softplus, D and the gate are applied per chunk too). With gradients, each chunk is one autograd Function
whose backward recomputes the chunk's states and runs the adjoint scan backwards in time, so the graph keeps
no (B, D, N, K) tensor per chunk — only the (B, D, N) state entering each chunk (B·D·N·L/K numbers) and a
few (B, D, K) tensors per chunk for the softplus and the gate, i.e. O(B·D·L) like the inputs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .common import prepare_delta

CHUNK = 128  # steps per chunk: log2(K) doubling rounds per chunk against Python overhead per chunk


def _doubling_scan(decay, x):
    """h_t = decay_t h_{t-1} + x_t along the last dim, h_{-1} = 0, by recursive doubling (log2 K rounds)."""
    k, o = x.shape[-1], 1
    while o < k:
        x = torch.cat([x[..., :o], torch.addcmul(x[..., o:], decay[..., o:], x[..., :-o])], dim=-1)
        if 2 * o < k:  # the last round's window decays are never used
            decay = torch.cat([decay[..., :o], decay[..., o:] * decay[..., :-o]], dim=-1)
        o *= 2
    return x


def _states(h, u, delta, A, B):
    """Per-step decays exp(Δ A) and states h_t of one chunk, both (B, G, E, N, K)."""
    decay = (delta[:, :, :, None, :] * A[None, ..., None]).exp()  # in [0, 1]
    x = (delta * u)[:, :, :, None, :] * B[:, :, None]  # Δ_s B_s u_s
    x[..., 0] += decay[..., 0] * h  # fold in the state entering the chunk
    return decay, _doubling_scan(decay, x)


class _ChunkScan(torch.autograd.Function):
    """One chunk: (h_in, u, Δ, A, B, C) -> (y = C·h, h_last), with the adjoint scan as its backward.

    The backward recomputes the states (saving them would cost (B, D, N, K) per chunk for the whole
    sequence) and runs the same doubling scan backwards in time for λ_t = ∂loss/∂h_t:
        λ_t = C_t gy_t + exp(Δ_{t+1} A) λ_{t+1},
    then every gradient is a sum of products of λ, the states and the inputs (see cpu.py)."""

    @staticmethod
    def forward(ctx, h, u, delta, A, B, C):
        # h: (B, G, E, N); u, delta: (B, G, E, K); A: (G, E, N); B, C: (B, G, N, K)
        _, states = _states(h, u, delta, A, B)
        ctx.save_for_backward(h, u, delta, A, B, C)
        return (states * C[:, :, None]).sum(3), states[..., -1]  # (B, G, E, K), (B, G, E, N)

    @staticmethod
    def backward(ctx, gy, gh):
        h, u, delta, A, B, C = ctx.saved_tensors
        decay, states = _states(h, u, delta, A, B)
        source = C[:, :, None] * gy[:, :, :, None, :]  # (B, G, E, N, K): ∂loss/∂h_t through y_t
        source[..., -1] += gh  # and through the state handed to the next chunk
        next_decay = torch.cat([decay[..., 1:], torch.zeros_like(decay[..., :1])], dim=-1)  # exp(Δ_{t+1} A)
        lam = _doubling_scan(next_decay.flip(-1), source.flip(-1)).flip(-1)  # reverse-time scan
        h_prev = torch.cat([h[..., None], states[..., :-1]], dim=-1)  # h_{t-1}
        decayed = lam * decay * h_prev  # λ_t exp(Δ_t A) h_{t-1}
        lam_B = (lam * B[:, :, None]).sum(3)  # (B, G, E, K): Σ_n λ_t B_t
        du = lam_B * delta
        ddelta = (decayed * A[None, ..., None]).sum(3) + lam_B * u
        dA = (decayed * delta[:, :, :, None, :]).sum((0, 4))  # (G, E, N)
        dB = (lam * (delta * u)[:, :, :, None, :]).sum(2)  # (B, G, N, K), summed over the group's channels
        dC = (states * gy[:, :, :, None, :]).sum(2)
        dh = lam[..., 0] * decay[..., 0]
        return dh, du, ddelta, dA, dB, dC


def _chunk(h, u, delta, z, A, B, C, D, delta_bias, delta_softplus):
    """Scan one chunk. h: (B, G, E, N) state entering it (E = D / G channels per group);
    u, delta, z: (B, G, E, K); A: (G, E, N); B, C: (B, G, N, K); D, delta_bias: (G, E).
    Returns the chunk's output (B, G, E, K) and its last state. Δ's bias and softplus, D and the z gate are
    applied here, per chunk, so no extra (B, D, L) tensor is made when no graph is recorded."""
    delta = prepare_delta(delta, delta_bias, delta_softplus)
    y, h = _ChunkScan.apply(h, u, delta, A, B, C)
    if D is not None:
        y = y + D[..., None] * u
    if z is not None:
        y = y * F.silu(z)
    return y, h


def chunked_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, chunk=None):
    """u, delta, z: (B, D, L); A: (D, N); B, C: (B, G, N, L); D, delta_bias: (D,). Output (B, D, L).
    `chunk` defaults to the module's CHUNK, read at call time."""
    chunk = chunk or CHUNK
    batch, d_model, length = u.shape
    groups, n_state = B.shape[1], A.shape[1]
    per = d_model // groups
    grouped = lambda t: None if t is None else t.reshape(*t.shape[:-2], groups, per, t.shape[-1])  # noqa: E731
    Ag, Dg, bias = (None if t is None else t.reshape(groups, per, *t.shape[1:]) for t in (A, D, delta_bias))
    # split (not slicing in the loop): its backward assembles the input gradients once, whereas every
    # slice's backward would write a full-size zero gradient per chunk — quadratic in L.
    pieces = [t.split(chunk, dim=-1) if t is not None else [None] * -(-length // chunk)
              for t in (grouped(u), grouped(delta), grouped(z), B, C)]
    track = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (u, delta, z, A, B, C, D, delta_bias))
    h = u.new_zeros(batch, groups, per, n_state)
    out = None if track else u.new_empty(batch, groups, per, length)  # filled chunk by chunk
    ys = []
    for i, (uc, dc, zc, Bc, Cc) in enumerate(zip(*pieces)):
        y, h = _chunk(h, uc, dc, zc, Ag, Bc, Cc, Dg, bias, delta_softplus)
        if track:
            ys.append(y)
        else:  # no graph: write into the output so the chunks' outputs never coexist with it
            out[..., i * chunk:(i + 1) * chunk] = y
    if track:  # cat, whose backward is one split; in-place writes would clone the full gradient per chunk
        out = torch.cat(ys, dim=-1)
    return out.view(batch, d_model, length)
