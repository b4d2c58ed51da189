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

Memory beyond inputs and output: a few (B, D, N, K) tensors for the chunk in flight, independent of L. When
gradients are needed each chunk runs under activation checkpointing, so autograd keeps only the (B, D, N)
state entering each chunk — B·D·N·L/K numbers — and recomputes one chunk at a time in the backward pass.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from .ssm import _prepare_delta

CHUNK = 128  # steps per chunk: log2(K) doubling rounds per chunk against Python overhead per chunk


def _chunk(h, u, delta, z, A, B, C, D, delta_bias, delta_softplus):
    """Scan one chunk. h: (B, G, E, N) state entering it (E = D / G channels per group);
    u, delta, z: (B, G, E, K); A: (G, E, N); B, C: (B, G, N, K); D, delta_bias: (G, E).
    Returns the chunk's output (B, G, E, K) and its last state. Δ's bias and softplus, D and the z gate are
    applied here, per chunk, so no extra (B, D, L) tensor is ever made."""
    delta = _prepare_delta(delta, delta_bias, delta_softplus)
    decay = (delta[:, :, :, None, :] * A[None, ..., None]).exp()  # (B, G, E, N, K), in [0, 1]
    x = (delta * u)[:, :, :, None, :] * B[:, :, None]  # (B, G, E, N, K): Δ_s B_s u_s
    x = torch.cat([x[..., :1] + decay[..., :1] * h[..., None], x[..., 1:]], dim=-1)  # carry-in
    k, o = x.shape[-1], 1
    while o < k:
        # Out-of-place updates (cat) so autograd can differentiate the rounds.
        x = torch.cat([x[..., :o], torch.addcmul(x[..., o:], decay[..., o:], x[..., :-o])], dim=-1)
        if 2 * o < k:  # the last round's window decays are never used
            decay = torch.cat([decay[..., :o], decay[..., o:] * decay[..., :-o]], dim=-1)
        o *= 2
    y = (x * C[:, :, None]).sum(3)  # (B, G, E, K): C_t · h_t
    if D is not None:
        y = y + D[..., None] * u
    if z is not None:
        y = y * F.silu(z)
    return y, x[..., -1]


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
    pieces = [t.split(chunk, dim=-1) if t is not None else [None] * len(range(0, length, chunk))
              for t in (grouped(u), grouped(delta), grouped(z), B, C)]
    track = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (u, delta, z, A, B, C, D, delta_bias))
    h = u.new_zeros(batch, groups, per, n_state)
    out = u.new_empty(batch, groups, per, length)  # filled chunk by chunk when no graph is recorded
    ys = []
    for i, (uc, dc, zc, Bc, Cc) in enumerate(zip(*pieces)):
        args = (h, uc, dc, zc, Ag, Bc, Cc, Dg, bias, delta_softplus)
        if track:  # recompute each chunk in the backward pass: autograd keeps only h per chunk
            y, h = checkpoint(_chunk, *args, use_reentrant=False)
            ys.append(y)
        else:
            out[..., i * chunk:(i + 1) * chunk], h = _chunk(*args)
    if track:  # cat, whose backward is one split; in-place writes would clone the full gradient per chunk
        out = torch.cat(ys, dim=-1)
    return out.view(batch, d_model, length)
