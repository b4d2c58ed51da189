"""SFM: spatial-frequency multi-scale transformer for MPI deblurring (Shang et al., IEEE Trans. Comput.
Imaging 10 (2024) 196).

A U-Net of transformer blocks over several scales. Each block mixes tokens in two domains at once:
  * spatial branch: multi-head self-attention inside non-overlapping w×w windows — local, pixel-to-pixel
    attention that re-draws edges;
  * frequency branch: the 2-D real FFT of the features, a pointwise MLP (1×1 conv, GELU, 1×1 conv) on the
    stacked real and imaginary parts, and the inverse FFT — every output pixel sees the whole image, and
    a blur, a convolution, is a per-frequency product in this domain;
both read the same LayerNorm-ed input and their sum is added back; then a gated depthwise-conv
feed-forward (Restormer's GDFN). Levels halve the resolution and double the width (conv +
PixelUnshuffle down, conv + PixelShuffle up), decoder levels concatenate the encoder skip and reduce it
with a 1×1 conv, and the output is added to the input (global residual).

Configuration: the paper's exact depths were not available to us, so `paper` is our choice: 3 levels of
width 64/128/256, heads 2/4/8, window 8, 4/4/8 blocks down to the bottleneck and 4/4 on the way up, FFN
expansion 2.66 — 15.6 M parameters, the size of the MPI-Mamba paper model (≈ 15–18 M). Window attention
has no relative-position bias (the frequency branch supplies the global context).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ..base import Restorer
from ..blocks import ChannelLayerNorm, Downsample, GatedDConvFeedForward, Upsample


class WindowAttention(nn.Module):
    """Multi-head self-attention within non-overlapping w×w windows; H and W must be multiples of w."""

    def __init__(self, channels: int, heads: int, window: int):
        super().__init__()
        if channels % heads:
            raise ValueError(f"channels ({channels}) must be divisible by heads ({heads})")
        self.heads, self.window = heads, window
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        q, k, v = (
            rearrange(t, "b (g d) (nh p1) (nw p2) -> (b nh nw) g (p1 p2) d", g=self.heads, p1=self.window, p2=self.window)
            for t in self.qkv(x).chunk(3, dim=1)
        )  # (B·windows, G, w², d)
        out = F.scaled_dot_product_attention(q, k, v)
        out = rearrange(
            out, "(b nh nw) g (p1 p2) d -> b (g d) (nh p1) (nw p2)",
            nh=h // self.window, nw=w // self.window, p1=self.window,
        )  # (B, C, H, W)
        return self.proj(out)


class FourierUnit(nn.Module):
    """Pointwise MLP on the 2-D spectrum: global mixing in O(HW log HW)."""

    def __init__(self, channels: int):
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Conv2d(2 * channels, 2 * channels, 1), nn.GELU(), nn.Conv2d(2 * channels, 2 * channels, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        spec = torch.fft.rfft2(x.float(), norm="ortho")  # (B, C, H, W//2+1) complex
        spec = self.mlp(torch.cat([spec.real, spec.imag], dim=1))  # (B, 2C, H, W//2+1)
        real, imag = spec.chunk(2, dim=1)
        return torch.fft.irfft2(torch.complex(real, imag), s=(h, w), norm="ortho").to(x.dtype)


class SpatialFrequencyBlock(nn.Module):
    def __init__(self, channels: int, heads: int, window: int, ffn_expansion: float):
        super().__init__()
        self.norm1 = ChannelLayerNorm(channels)
        self.spatial = WindowAttention(channels, heads, window)
        self.frequency = FourierUnit(channels)
        self.norm2 = ChannelLayerNorm(channels)
        self.ffn = GatedDConvFeedForward(channels, ffn_expansion, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm1(x)
        x = x + self.spatial(y) + self.frequency(y)
        return x + self.ffn(self.norm2(x))


class SFM(Restorer):
    def __init__(
        self,
        in_channels: int = 1,
        width: int = 32,
        enc_blocks: tuple[int, ...] | list[int] = (2, 2, 4),
        dec_blocks: tuple[int, ...] | list[int] = (2, 2),  # per level above the bottleneck, top first
        heads: tuple[int, ...] | list[int] = (1, 2, 4),
        window: int = 8,
        ffn_expansion: float = 2.66,
    ):
        super().__init__()
        levels = len(enc_blocks)
        if len(heads) != levels or len(dec_blocks) != levels - 1:
            raise ValueError(
                f"need one head count per level ({levels}) and one decoder depth per level above the "
                f"bottleneck ({levels - 1}); got heads={heads}, dec_blocks={dec_blocks}"
            )
        # every level's feature map must tile into whole windows
        self.size_multiple = window * 2 ** (levels - 1)
        widths = [width * 2**i for i in range(levels)]

        def stage(level: int, depth: int) -> nn.Sequential:
            return nn.Sequential(
                *(SpatialFrequencyBlock(widths[level], heads[level], window, ffn_expansion) for _ in range(depth))
            )

        self.embed = nn.Conv2d(in_channels, width, 3, padding=1)
        self.encoders = nn.ModuleList(stage(i, d) for i, d in enumerate(enc_blocks))  # last = bottleneck
        self.downs = nn.ModuleList(Downsample(widths[i]) for i in range(levels - 1))
        self.ups = nn.ModuleList(Upsample(widths[i + 1]) for i in reversed(range(levels - 1)))
        self.reduces = nn.ModuleList(nn.Conv2d(2 * widths[i], widths[i], 1) for i in reversed(range(levels - 1)))
        self.decoders = nn.ModuleList(stage(i, dec_blocks[i]) for i in reversed(range(levels - 1)))
        self.output = nn.Conv2d(width, in_channels, 3, padding=1)

    def restore(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.embed(x)  # (B, width, H, W)
        skips = []
        for encoder, down in zip(self.encoders[:-1], self.downs):
            feat = encoder(feat)
            skips.append(feat)
            feat = down(feat)  # (B, 2C, H/2, W/2)
        feat = self.encoders[-1](feat)  # bottleneck
        for up, reduce, decoder, skip in zip(self.ups, self.reduces, self.decoders, reversed(skips)):
            feat = reduce(torch.cat([up(feat), skip], dim=1))  # (B, C, 2h, 2w)
            feat = decoder(feat)
        return x + self.output(feat)


PRESETS: dict[str, dict] = {
    "tiny": dict(width=8, enc_blocks=(1, 1, 1), dec_blocks=(1, 1), heads=(1, 1, 2), window=4, ffn_expansion=2.0),
    "small": dict(width=24, enc_blocks=(1, 2, 2), dec_blocks=(1, 1), heads=(1, 2, 4), window=8),
    "paper": dict(width=64, enc_blocks=(4, 4, 8), dec_blocks=(4, 4), heads=(2, 4, 8), window=8),
}
MODEL = SFM
