"""SwinIR (Liang et al., "SwinIR: Image Restoration Using Swin Transformer", ICCV Workshops 2021).

Shallow 3×3 conv → K residual Swin transformer blocks (RSTB: L Swin layers + a 3×3 conv, with a
residual) → LayerNorm → 3×3 conv, added to the shallow features → 3×3 conv to the image, plus the
input (global residual: the network learns the correction, as the paper's denoising / JPEG
variants do; upscale 1, so no pixel-shuffle head).

A Swin layer is x ← x + W-MSA(LN(x)); x ← x + MLP(LN(x)), where W-MSA is multi-head attention inside
non-overlapping window_size² windows with a learned relative position bias, and every second layer
rolls the map by window_size // 2 first (shifted windows) with a mask that stops attention between
pixels that the roll brought together from opposite borders.

`paper` is the published grey-scale denoising / JPEG configuration (embed 180, 6 RSTBs of 6 layers, 6
heads, window 8, MLP ratio 2): 11.50 M parameters at C = 1, the 11.5 M the paper reports for it.
Stochastic depth (drop-path 0.1 in the authors' training) is left out: it changes training only.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..base import Restorer


def window_partition(x: torch.Tensor, ws: int) -> torch.Tensor:
    """(B, H, W, C) -> (B, nW, ws*ws, C), windows in row-major order."""
    b, h, w, c = x.shape
    x = x.view(b, h // ws, ws, w // ws, ws, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, (h // ws) * (w // ws), ws * ws, c)


def window_merge(windows: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Inverse of `window_partition`: (B, nW, ws*ws, C) -> (B, H, W, C)."""
    b, _, n, c = windows.shape
    ws = int(round(n**0.5))
    x = windows.view(b, h // ws, w // ws, ws, ws, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h, w, c)


def relative_position_index(ws: int) -> torch.Tensor:
    """(ws², ws²) index into a ((2ws−1)², heads) bias table: one entry per relative offset (dy, dx)."""
    yy, xx = torch.meshgrid(torch.arange(ws), torch.arange(ws), indexing="ij")
    coords = torch.stack([yy.flatten(), xx.flatten()])  # (2, N)
    rel = coords[:, :, None] - coords[:, None, :] + (ws - 1)  # (2, N, N), offsets shifted to >= 0
    return rel[0] * (2 * ws - 1) + rel[1]


@lru_cache(maxsize=32)
def shifted_window_mask(h: int, w: int, ws: int, shift: int) -> torch.Tensor:
    """(nW, N, N) additive mask for a map rolled by −shift: −inf between pixels of different regions.

    After the roll, the last window row/column holds pixels from up to three regions (the true
    border strip and the wrapped-around strip); only pixels of the same region may attend.
    """
    region = torch.zeros(1, h, w, 1)
    label = 0
    for rows in (slice(0, h - ws), slice(h - ws, h - shift), slice(h - shift, h)):
        for cols in (slice(0, w - ws), slice(w - ws, w - shift), slice(w - shift, w)):
            region[:, rows, cols] = label
            label += 1
    labels = window_partition(region, ws)[0, :, :, 0]  # (nW, N)
    blocked = labels[:, :, None] != labels[:, None, :]
    return torch.zeros(blocked.shape).masked_fill(blocked, float("-inf"))


class WindowAttention(nn.Module):
    """Multi-head self-attention within each window, with a relative position bias per head."""

    def __init__(self, dim: int, window_size: int, num_heads: int):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed_dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.relative_bias = nn.Parameter(torch.zeros((2 * window_size - 1) ** 2, num_heads))
        nn.init.trunc_normal_(self.relative_bias, std=0.02)
        # derived from window_size, so not saved in checkpoints
        self.register_buffer("relative_index", relative_position_index(window_size), persistent=False)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        b, nw, n, c = x.shape  # (B, nW, N, C)
        qkv = self.qkv(x).view(b, nw, n, 3, self.num_heads, c // self.num_heads)
        q, k, v = qkv.permute(3, 0, 1, 4, 2, 5)  # each (B, nW, heads, N, head_dim)
        bias = self.relative_bias[self.relative_index].permute(2, 0, 1)  # (heads, N, N)
        if mask is not None:
            bias = bias + mask[:, None]  # (nW, heads, N, N)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype))  # scale 1/sqrt(head_dim)
        return self.proj(out.transpose(2, 3).reshape(b, nw, n, c))


class SwinLayer(nn.Module):
    def __init__(self, dim: int, num_heads: int, window_size: int, shift: bool, mlp_ratio: float):
        super().__init__()
        self.window_size = window_size
        self.shift = window_size // 2 if shift else 0
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, window_size, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, h, w, _ = x.shape  # (B, H, W, C)
        y = self.norm1(x)
        mask = None
        if self.shift:
            y = torch.roll(y, shifts=(-self.shift, -self.shift), dims=(1, 2))
            mask = shifted_window_mask(h, w, self.window_size, self.shift).to(x.device)
        y = window_merge(self.attn(window_partition(y, self.window_size), mask), h, w)
        if self.shift:
            y = torch.roll(y, shifts=(self.shift, self.shift), dims=(1, 2))
        x = x + y
        return x + self.mlp(self.norm2(x))


class RSTB(nn.Module):
    """Residual Swin transformer block: `depth` Swin layers (alternating plain / shifted windows) + 3×3 conv."""

    def __init__(self, dim: int, depth: int, num_heads: int, window_size: int, mlp_ratio: float):
        super().__init__()
        self.layers = nn.ModuleList(
            SwinLayer(dim, num_heads, window_size, shift=i % 2 == 1, mlp_ratio=mlp_ratio) for i in range(depth)
        )
        self.conv = nn.Conv2d(dim, dim, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x  # (B, H, W, C)
        for layer in self.layers:
            y = layer(y)
        # the conv brings a convolution's inductive bias into the transformer trunk
        y = self.conv(y.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return x + y


class SwinIR(Restorer):
    def __init__(
        self,
        in_channels: int = 1,
        embed_dim: int = 180,
        depths: Sequence[int] = (6, 6, 6, 6, 6, 6),
        num_heads: Sequence[int] = (6, 6, 6, 6, 6, 6),
        window_size: int = 8,
        mlp_ratio: float = 2.0,
    ):
        super().__init__()
        if len(depths) != len(num_heads):
            raise ValueError(f"depths {list(depths)} and num_heads {list(num_heads)} must have the same length")
        self.size_multiple = window_size  # windows tile the (padded) map exactly
        self.conv_first = nn.Conv2d(in_channels, embed_dim, 3, padding=1)
        self.embed_norm = nn.LayerNorm(embed_dim)
        self.groups = nn.ModuleList(
            RSTB(embed_dim, d, h, window_size, mlp_ratio) for d, h in zip(depths, num_heads)
        )
        self.norm = nn.LayerNorm(embed_dim)
        self.conv_after_body = nn.Conv2d(embed_dim, embed_dim, 3, padding=1)
        self.conv_last = nn.Conv2d(embed_dim, in_channels, 3, padding=1)
        self.apply(_init_linear)

    def restore(self, x: torch.Tensor) -> torch.Tensor:
        shallow = self.conv_first(x)  # (B, D, H, W)
        t = self.embed_norm(shallow.permute(0, 2, 3, 1))  # (B, H, W, D)
        for group in self.groups:
            t = group(t)
        deep = self.conv_after_body(self.norm(t).permute(0, 3, 1, 2))  # (B, D, H, W)
        return x + self.conv_last(deep + shallow)


def _init_linear(m: nn.Module) -> None:
    # Swin's initialisation: small truncated-normal linear weights, zero biases
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        nn.init.zeros_(m.bias)


PRESETS = {
    "tiny": dict(embed_dim=24, depths=[2, 2], num_heads=[2, 2], window_size=4, mlp_ratio=2.0),
    # a full-resolution transformer costs about (parameters × pixels) MACs: sized to ~1.3 GMACs at 64×64,
    # Restormer-small's cost, so that it trains on a laptop CPU
    "small": dict(embed_dim=48, depths=[4, 4, 4], num_heads=[4, 4, 4], window_size=8, mlp_ratio=2.0),
    "paper": dict(embed_dim=180, depths=[6] * 6, num_heads=[6] * 6, window_size=8, mlp_ratio=2.0),
}
MODEL = SwinIR
