"""SS2D: the 2D selective scan of VMamba, as used inside every LFF-SSM block (DESIGN §3).

A 1D scan sees pixels one after another, so one order only lets a pixel see what came before it. SS2D
reads the image in four orders — rows, columns, and both reversed — each with its own input-dependent
Δ/B/C projections, and sums the four outputs, so every pixel gathers context from every direction.

    x, z = in_proj(input)                 # x: signal, z: gate, each 2x the width
    x = SiLU(depthwise 3x3 conv(x))
    y = sum over the 4 orders of scan(x)  # one batched selective_scan call, K*D channels
    out = out_proj(LayerNorm(y) * SiLU(z))
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .ssm import selective_scan

NUM_ORDERS = 4  # rows, columns, rows reversed, columns reversed


def scan_orders(x: torch.Tensor) -> torch.Tensor:
    """(B, D, H, W) -> (B, 4, D, H*W): the pixels in row-major, column-major and both reversed."""
    rows = x.flatten(2)  # (B, D, HW), along W first
    cols = x.transpose(2, 3).flatten(2)  # (B, D, WH), along H first
    forward = torch.stack([rows, cols], dim=1)  # (B, 2, D, L)
    return torch.cat([forward, forward.flip(-1)], dim=1)


def merge_orders(y: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Inverse of `scan_orders` followed by the sum: (B, 4, D, L) -> (B, D, H, W)."""
    y = y[:, :2] + y[:, 2:].flip(-1)  # undo the reversal, (B, 2, D, L)
    rows = y[:, 0].unflatten(-1, (height, width))
    cols = y[:, 1].unflatten(-1, (width, height)).transpose(2, 3)
    return rows + cols


class SS2D(nn.Module):
    """(B, C, H, W) -> (B, C, H, W). `expand` sets the inner width, `d_state` the SSM state size N."""

    def __init__(self, channels: int, d_state: int = 16, expand: int = 2,
                 dt_min: float = 1e-3, dt_max: float = 0.1, scan_backend: str = "auto"):
        super().__init__()
        inner = expand * channels
        self.inner, self.d_state = inner, d_state
        self.dt_rank = math.ceil(channels / 16)
        self.scan_backend = scan_backend

        self.in_proj = nn.Linear(channels, 2 * inner, bias=False)
        self.conv = nn.Conv2d(inner, inner, 3, padding=1, groups=inner)
        # per-order projections, stored stacked so the four orders run as one batched matmul
        k, r = NUM_ORDERS, self.dt_rank
        self.x_proj_weight = nn.Parameter(torch.empty(k, r + 2 * d_state, inner))  # x -> (Δ low-rank, B, C)
        self.dt_proj_weight = nn.Parameter(torch.empty(k, inner, r))  # Δ low-rank -> per channel
        self.dt_proj_bias = nn.Parameter(torch.empty(k, inner))
        # S4D-real init: A = -exp(A_log) = -(1, 2, ..., N) for every channel; skip connection D = 1
        a = torch.arange(1, d_state + 1, dtype=torch.float32).repeat(k * inner, 1)  # (K*D, N)
        self.A_log = nn.Parameter(torch.log(a))
        self.D = nn.Parameter(torch.ones(k * inner))
        self.out_norm = nn.LayerNorm(inner)
        self.out_proj = nn.Linear(inner, channels, bias=False)
        self._init_projections(dt_min, dt_max)

    @torch.no_grad()
    def _init_projections(self, dt_min: float, dt_max: float) -> None:
        bound = self.inner ** -0.5  # nn.Linear's default for the x projection
        nn.init.uniform_(self.x_proj_weight, -bound, bound)
        bound = self.dt_rank ** -0.5
        nn.init.uniform_(self.dt_proj_weight, -bound, bound)
        # Δ bias so that softplus(bias) is log-uniform in [dt_min, dt_max]: bias = softplus^-1(dt)
        dt = torch.exp(torch.rand_like(self.dt_proj_bias) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        self.dt_proj_bias.copy_(dt + torch.log(-torch.expm1(-dt)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        xz = self.in_proj(x.permute(0, 2, 3, 1))  # (B, H, W, 2D)
        x, z = xz.chunk(2, dim=-1)
        x = F.silu(self.conv(x.permute(0, 3, 1, 2)))  # (B, D, H, W)

        xs = scan_orders(x)  # (B, K, D, L)
        projected = torch.einsum("bkdl,kcd->bkcl", xs, self.x_proj_weight)  # (B, K, R + 2N, L)
        dt, B, C = projected.split([self.dt_rank, self.d_state, self.d_state], dim=2)
        dt = torch.einsum("bkrl,kdr->bkdl", dt, self.dt_proj_weight)  # (B, K, D, L)

        # the four orders as K*D channels of one scan; B/C grouped: order k drives its own D channels
        y = selective_scan(
            xs.flatten(1, 2), dt.flatten(1, 2), -torch.exp(self.A_log), B, C, self.D,
            delta_bias=self.dt_proj_bias.flatten(), delta_softplus=True, backend=self.scan_backend,
        )  # (B, K*D, L)
        y = merge_orders(y.unflatten(1, (NUM_ORDERS, self.inner)), h, w)  # (B, D, H, W)

        y = self.out_norm(y.permute(0, 2, 3, 1)) * F.silu(z)  # (B, H, W, D)
        return self.out_proj(y).permute(0, 3, 1, 2)  # (B, C, H, W)
