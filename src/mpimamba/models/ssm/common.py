"""Helpers shared by every selective-scan backend (a leaf module: it imports no other backend)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

NUM_ORDERS = 4  # SS2D's scan orders: rows, columns, rows reversed, columns reversed


def compute_dtype(u: torch.Tensor) -> torch.dtype:
    """float64 stays float64 (so tests can compare against an exact-ish reference); the rest runs in float32."""
    return torch.float64 if u.dtype == torch.float64 else torch.float32


def prepare_delta(delta, delta_bias, delta_softplus):
    """Δ with its bias and softplus applied; autograd differentiates these."""
    if delta_bias is not None:
        delta = delta + delta_bias[..., None].to(delta.dtype)  # (D, 1) or grouped (G, E, 1)
    if delta_softplus:
        delta = F.softplus(delta)
    return delta


def grouped(M: torch.Tensor) -> torch.Tensor:
    """B or C as (B, G, N, L): the ungrouped (B, N, L) form is one group."""
    return M.unsqueeze(1) if M.ndim == 3 else M
