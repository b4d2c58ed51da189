"""FDS-MPI: a CNN fusing dual sampling paths to raise MPI resolution (Shang et al., Phys. Med. Biol. 67
(2022) 125012).

Every block looks at the features twice and fuses the two views:
  * a full-resolution path (two 3×3 convs) that keeps fine detail and exact positions;
  * a sampled path that goes down to half resolution (conv + PixelUnshuffle), convolves there — where a
    3×3 kernel spans twice the distance, which suits an MPI blur several pixels wide — and comes back up
    (conv + PixelShuffle);
the two are concatenated and mixed by a 1×1 conv, and the block adds the result to its input. A head conv,
a stack of such blocks with a long skip, and a tail conv make the network; the output is added to the
input (global residual).

The full text of the paper was not available to us: the design follows its abstract (a CNN fusing a
full-resolution and a down/up-sampled path, end to end, low- to high-resolution image), and the
configuration is our choice. `paper`: width 96, 12 dual-sampling blocks — 14.7 M parameters, the size of the
MPI-Mamba paper backbone (≈ 14.7 M), so that the comparison is between architectures, not sizes.
"""

from __future__ import annotations

import torch
from torch import nn

from ..base import Restorer
from ..blocks import Downsample, Upsample


class DualSamplingBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.full = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1),
        )
        self.sampled = nn.Sequential(
            Downsample(channels),  # (B, 2C, H/2, W/2)
            nn.ReLU(inplace=True),
            nn.Conv2d(2 * channels, 2 * channels, 3, padding=1),
            nn.ReLU(inplace=True),
            Upsample(2 * channels),  # (B, C, H, W)
        )
        self.fuse = nn.Conv2d(2 * channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        both = torch.cat([self.full(x), self.sampled(x)], dim=1)  # (B, 2C, H, W)
        return x + self.fuse(both)


class FDS(Restorer):
    size_multiple = 2  # one level of down/up-sampling inside every block

    def __init__(self, in_channels: int = 1, width: int = 32, blocks: int = 4):
        super().__init__()
        self.head = nn.Conv2d(in_channels, width, 3, padding=1)
        self.body = nn.Sequential(*(DualSamplingBlock(width) for _ in range(blocks)))
        self.body_end = nn.Conv2d(width, width, 3, padding=1)
        self.tail = nn.Conv2d(width, in_channels, 3, padding=1)

    def restore(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.head(x)  # (B, width, H, W)
        feat = feat + self.body_end(self.body(feat))  # long skip around the block stack
        return x + self.tail(feat)


PRESETS: dict[str, dict] = {
    "tiny": dict(width=8, blocks=2),
    "small": dict(width=32, blocks=4),
    "paper": dict(width=96, blocks=12),
}
MODEL = FDS
