"""SS2D: the 2D selective scan of VMamba, as used inside every LFF-SSM block (DESIGN §3).

A 1D scan sees pixels one after another, so one order only lets a pixel see what came before it. SS2D
reads the image in four orders — rows, columns, and both reversed — each with its own input-dependent
Δ/B/C projections, and sums the four outputs, so every pixel gathers context from every direction.

    x, z = in_proj(input)                 # x: signal, z: gate, each 2x the width
    x = SiLU(depthwise 3x3 conv(x))
    y = sum over the 4 orders of scan(x)  # one ss2d_scan call; the cpu kernel walks the orders by index
    out = out_proj(LayerNorm(y) * SiLU(z))

Everything around the scan stays channels last, (B, H·W, ·), the layout the linear layers and the
LayerNorm want, so the only layout changes are the two around the depthwise convolution.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .ssm import NUM_ORDERS, ss2d_scan


class SS2D(nn.Module):
    """(B, C, H, W) -> (B, C, H, W). `expand` sets the inner width, `d_state` the SSM state size N."""

    def __init__(self, channels: int, d_state: int = 16, expand: int = 2,
                 dt_min: float = 1e-3, dt_max: float = 0.1):
        super().__init__()
        inner = expand * channels
        self.inner, self.d_state = inner, d_state
        self.dt_rank = math.ceil(channels / 16)

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
        k, r, n = NUM_ORDERS, self.dt_rank, self.d_state
        xz = self.in_proj(x.permute(0, 2, 3, 1))  # (B, H, W, 2D)
        x, z = xz.chunk(2, dim=-1)
        x = F.silu(self.conv(x.permute(0, 3, 1, 2)))  # (B, D, H, W)
        x = x.permute(0, 2, 3, 1).reshape(b, h * w, self.inner)  # (B, L, D), channels last

        # every order's Δ/B/C projection of every pixel in one matmul: (B, L, D) @ (D, K·(R + 2N))
        projected = (x @ self.x_proj_weight.flatten(0, 1).t()).view(b, h * w, k, r + 2 * n)
        dt, B, C = projected.split([r, n, n], dim=-1)  # (B, L, K, R), (B, L, K, N) twice
        # the per-order low-rank Δ map as one block-diagonal matmul: (B, L, K·R) @ (K·R, K·D)
        dt_map = torch.block_diag(*self.dt_proj_weight.transpose(1, 2))
        dt = (dt.reshape(b, h * w, k * r) @ dt_map).view(b, h * w, k, self.inner)  # (B, L, K, D)

        y = ss2d_scan(x, dt, -torch.exp(self.A_log).view(k, self.inner, n), B.contiguous(), C.contiguous(),
                      self.D.view(k, self.inner), self.dt_proj_bias, h, w)  # (B, L, D)
        y = self.out_norm(y) * F.silu(z.reshape(b, h * w, self.inner))
        return self.out_proj(y).transpose(1, 2).reshape(b, -1, h, w)  # (B, C, H, W)
