"""NAFNet: the nonlinear-activation-free baseline (Chen, Chu, Zhang & Sun, ECCV 2022, "Simple Baselines
for Image Restoration").

A plain U-Net of NAF blocks. Each block has two residual halves, both opening with a channel LayerNorm:
  1. spatial mixing: 1×1 conv (C -> 2C), depthwise 3×3 conv, SimpleGate (split channels in half and
     multiply the halves: 2C -> C), simplified channel attention (global average pool -> 1×1 conv ->
     rescale the channels, no sigmoid), 1×1 conv; added back scaled by a learned per-channel β (init 0);
  2. feed-forward: 1×1 conv (C -> 2C), SimpleGate, 1×1 conv; added back scaled by γ (init 0).
There is no ReLU/GELU/sigmoid/softmax anywhere: the products in SimpleGate and the attention are the
network's only nonlinearities. Downsampling is a 2×2 stride-2 conv doubling the width; upsampling a
bias-free 1×1 conv doubling the width followed by PixelShuffle(2) (which quarters it); skips are added,
not concatenated; the output is added to the input (global residual).

`paper` preset = NAFNet-GoPro-width64, the published deblurring configuration (width 64, encoder blocks
[1, 1, 1, 28], 1 middle block, decoder blocks [1, 1, 1, 1]); published size 67.89 M parameters (the
official repository's model zoo; its float32 checkpoint is ≈ 275 MB). Our count for C = 1 is checked
against that figure in the tests (the published model has C = 3; the difference is a few hundred weights).
"""

from __future__ import annotations

import torch
from torch import nn

from ..base import Restorer
from ..blocks import ChannelLayerNorm


class SimpleGate(nn.Module):
    """Split the channels in half and multiply: (B, 2C, H, W) -> (B, C, H, W)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = x.chunk(2, dim=1)
        return a * b


class SimplifiedChannelAttention(nn.Module):
    """Channel reweighting by a 1×1 conv of the global average — no squeeze, no sigmoid."""

    def __init__(self, channels: int):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.proj = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.proj(self.pool(x))  # (B, C, 1, 1) weights broadcast over H, W


class NAFBlock(nn.Module):
    def __init__(self, channels: int, dw_expand: int = 2, ffn_expand: int = 2):
        super().__init__()
        dw = channels * dw_expand
        ffn = channels * ffn_expand
        self.norm1 = ChannelLayerNorm(channels, eps=1e-6)
        self.spatial = nn.Sequential(
            nn.Conv2d(channels, dw, 1),
            nn.Conv2d(dw, dw, 3, padding=1, groups=dw),  # depthwise: local spatial mixing
            SimpleGate(),  # (B, dw, H, W) -> (B, dw/2, H, W)
            SimplifiedChannelAttention(dw // 2),
            nn.Conv2d(dw // 2, channels, 1),
        )
        self.norm2 = ChannelLayerNorm(channels, eps=1e-6)
        self.ffn = nn.Sequential(
            nn.Conv2d(channels, ffn, 1),
            SimpleGate(),
            nn.Conv2d(ffn // 2, channels, 1),
        )
        # zero-initialised residual scales: each block starts as the identity, which keeps deep
        # stacks (28 blocks at the bottom level of the paper model) stable early in training
        self.beta = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.gamma = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.beta * self.spatial(self.norm1(x))
        return x + self.gamma * self.ffn(self.norm2(x))


def _stage(channels: int, depth: int) -> nn.Sequential:
    return nn.Sequential(*(NAFBlock(channels) for _ in range(depth)))


class NAFNet(Restorer):
    def __init__(
        self,
        in_channels: int = 1,
        width: int = 16,
        enc_blocks: tuple[int, ...] | list[int] = (1, 1, 1, 1),
        middle_blocks: int = 1,
        dec_blocks: tuple[int, ...] | list[int] = (1, 1, 1, 1),
    ):
        super().__init__()
        if len(enc_blocks) != len(dec_blocks):
            raise ValueError(f"enc_blocks {enc_blocks} and dec_blocks {dec_blocks} must have the same length")
        self.size_multiple = 2 ** len(enc_blocks)
        self.intro = nn.Conv2d(in_channels, width, 3, padding=1)

        self.encoders, self.downs = nn.ModuleList(), nn.ModuleList()
        ch = width
        for depth in enc_blocks:
            self.encoders.append(_stage(ch, depth))
            self.downs.append(nn.Conv2d(ch, 2 * ch, 2, stride=2))  # halves H, W; doubles channels
            ch *= 2
        self.middle = _stage(ch, middle_blocks)

        self.ups, self.decoders = nn.ModuleList(), nn.ModuleList()
        for depth in reversed(dec_blocks):
            # 1×1 conv to 2C, then PixelShuffle(2): (B, 2C, h, w) -> (B, C/2, 2h, 2w)
            self.ups.append(nn.Sequential(nn.Conv2d(ch, 2 * ch, 1, bias=False), nn.PixelShuffle(2)))
            ch //= 2
            self.decoders.append(_stage(ch, depth))
        self.ending = nn.Conv2d(width, in_channels, 3, padding=1)

    def restore(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.intro(x)  # (B, width, H, W)
        skips = []
        for encoder, down in zip(self.encoders, self.downs):
            feat = encoder(feat)
            skips.append(feat)
            feat = down(feat)
        feat = self.middle(feat)  # (B, width·2^levels, H/2^levels, W/2^levels)
        for up, decoder, skip in zip(self.ups, self.decoders, reversed(skips)):
            feat = decoder(up(feat) + skip)
        return x + self.ending(feat)


PRESETS: dict[str, dict] = {
    "tiny": dict(width=8, enc_blocks=(1, 1), middle_blocks=1, dec_blocks=(1, 1)),
    "small": dict(width=16, enc_blocks=(1, 1, 1, 2), middle_blocks=1, dec_blocks=(1, 1, 1, 1)),
    "paper": dict(width=64, enc_blocks=(1, 1, 1, 28), middle_blocks=1, dec_blocks=(1, 1, 1, 1)),
}
MODEL = NAFNet
