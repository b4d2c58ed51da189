"""Restormer (Zamir et al., "Restormer: Efficient Transformer for High-Resolution Image Restoration", CVPR 2022).

A 4-level U-Net of transformer blocks, each x ← x + MDTA(LN(x)); x ← x + GDFN(LN(x)) (multi-Dconv head
transposed attention: attention across channels, linear in the number of pixels; gated-Dconv
feed-forward). 3×3 conv embedding; downsample = conv + PixelUnshuffle(2) (channels ×2), upsample =
conv + PixelShuffle(2); decoder skips concatenate the encoder features (1×1 reduction at levels 2-3,
none at level 1, which therefore runs at 2× width); refinement blocks at full resolution; 3×3 conv to
the image plus the input (global residual).

The blocks (norm, MDTA, GDFN, resampling) come from `mpimamba.models.blocks`, shared with MPI-Mamba's
ablation; the U-Net here is also DiffIR's DIRformer, which passes its prior to every block.

`paper` is the published configuration (dim 48, blocks [4, 6, 6, 8], 4 refinement blocks, heads
[1, 2, 4, 8], FFN expansion 2.66, no conv biases, bias-free LayerNorm as in the denoising models): 26.1 M
parameters, the 26.13 M the paper reports.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn

from ..base import Restorer
from ..blocks import ChannelLayerNorm, Downsample, GatedDConvFeedForward, TransposedAttention, Upsample


class RestormerBlock(nn.Module):
    """x + MDTA(LN(x)), then x + GDFN(LN(x)); (B, C, H, W) -> (B, C, H, W)."""

    def __init__(self, dim: int, heads: int, expansion: float, bias: bool, norm_bias: bool):
        super().__init__()
        self.norm1 = ChannelLayerNorm(dim, bias=norm_bias)
        self.attn = TransposedAttention(dim, heads, bias=bias)
        self.norm2 = ChannelLayerNorm(dim, bias=norm_bias)
        self.ffn = GatedDConvFeedForward(dim, expansion, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.ffn(self.norm2(x))


class Stage(nn.ModuleList):
    """A run of blocks; `cond` (e.g. DiffIR's prior vector) is handed to each block unchanged."""

    def forward(self, x: torch.Tensor, *cond: torch.Tensor) -> torch.Tensor:
        for block in self:
            x = block(x, *cond)
        return x


BlockFactory = Callable[[int, int], nn.Module]  # (channels, heads) -> block


class RestormerUNet(nn.Module):
    """The 4-level encoder-decoder; `make_block(channels, heads)` builds every transformer block.

    Input height and width must be multiples of 8 (three 2× downsamplings).
    """

    def __init__(
        self,
        in_channels: int,
        dim: int,
        num_blocks: Sequence[int],
        num_refinement_blocks: int,
        heads: Sequence[int],
        make_block: BlockFactory,
        bias: bool,
    ):
        super().__init__()
        if len(num_blocks) != 4 or len(heads) != 4:
            raise ValueError(f"num_blocks and heads need 4 entries (one per level), got {num_blocks} and {heads}")

        def stage(n: int, channels: int, h: int) -> Stage:
            return Stage(make_block(channels, h) for _ in range(n))

        d = dim
        self.embed = nn.Conv2d(in_channels, d, 3, padding=1, bias=bias)
        self.encoder1 = stage(num_blocks[0], d, heads[0])
        self.down1 = Downsample(d)
        self.encoder2 = stage(num_blocks[1], 2 * d, heads[1])
        self.down2 = Downsample(2 * d)
        self.encoder3 = stage(num_blocks[2], 4 * d, heads[2])
        self.down3 = Downsample(4 * d)
        self.latent = stage(num_blocks[3], 8 * d, heads[3])
        self.up3 = Upsample(8 * d)
        self.reduce3 = nn.Conv2d(8 * d, 4 * d, 1, bias=bias)
        self.decoder3 = stage(num_blocks[2], 4 * d, heads[2])
        self.up2 = Upsample(4 * d)
        self.reduce2 = nn.Conv2d(4 * d, 2 * d, 1, bias=bias)
        self.decoder2 = stage(num_blocks[1], 2 * d, heads[1])
        self.up1 = Upsample(2 * d)
        # level 1 keeps the concatenated 2d channels: no reduction, the finest features stay wide
        self.decoder1 = stage(num_blocks[0], 2 * d, heads[0])
        self.refinement = stage(num_refinement_blocks, 2 * d, heads[0])
        self.output = nn.Conv2d(2 * d, in_channels, 3, padding=1, bias=bias)

    def forward(self, x: torch.Tensor, *cond: torch.Tensor) -> torch.Tensor:
        e1 = self.encoder1(self.embed(x), *cond)  # (B, d, H, W)
        e2 = self.encoder2(self.down1(e1), *cond)  # (B, 2d, H/2, W/2)
        e3 = self.encoder3(self.down2(e2), *cond)  # (B, 4d, H/4, W/4)
        z = self.latent(self.down3(e3), *cond)  # (B, 8d, H/8, W/8)
        d3 = self.decoder3(self.reduce3(torch.cat([self.up3(z), e3], dim=1)), *cond)  # (B, 4d, H/4, W/4)
        d2 = self.decoder2(self.reduce2(torch.cat([self.up2(d3), e2], dim=1)), *cond)  # (B, 2d, H/2, W/2)
        d1 = self.decoder1(torch.cat([self.up1(d2), e1], dim=1), *cond)  # (B, 2d, H, W)
        d1 = self.refinement(d1, *cond)
        return x + self.output(d1)


class Restormer(Restorer):
    size_multiple = 8

    def __init__(
        self,
        in_channels: int = 1,
        dim: int = 48,
        num_blocks: Sequence[int] = (4, 6, 6, 8),
        num_refinement_blocks: int = 4,
        heads: Sequence[int] = (1, 2, 4, 8),
        ffn_expansion: float = 2.66,
        bias: bool = False,
        norm_bias: bool = False,
    ):
        super().__init__()

        def make_block(channels: int, h: int) -> nn.Module:
            return RestormerBlock(channels, h, ffn_expansion, bias, norm_bias)

        self.net = RestormerUNet(in_channels, dim, list(num_blocks), num_refinement_blocks, list(heads), make_block, bias)

    def restore(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


PRESETS = {
    "tiny": dict(dim=4, num_blocks=[1, 1, 1, 1], num_refinement_blocks=1, heads=[1, 1, 1, 2], ffn_expansion=2.0),
    "small": dict(dim=24, num_blocks=[2, 2, 2, 2], num_refinement_blocks=2, heads=[1, 2, 4, 8], ffn_expansion=2.66),
    "paper": dict(dim=48, num_blocks=[4, 6, 6, 8], num_refinement_blocks=4, heads=[1, 2, 4, 8], ffn_expansion=2.66),
}
MODEL = Restormer
