"""AEPNet: anisotropic edge-preserving CNN for unidirectional Cartesian MPI (Shang et al., Phys. Med. Biol.
68 (2023) 045014).

A Cartesian x-space scan blurs little along its drive axis and a lot across it, so the network's kernels
are anisotropic too. Two branches:
  * the anisotropic main branch: a stack of residual blocks whose convolutions are asymmetric — a square
    k×k kernel summed with a 1×K (along x, columns) and a K×1 (along z, rows) kernel, K > k — so each
    block sees far along both axes at the cost of a thin cross rather than a K×K square;
  * the edge-preserving branch: fixed Sobel filters give the input's horizontal and vertical gradients
    (B, 2C, H, W); a small conv stack turns them into edge features that are concatenated with the main
    features before the reconstruction conv, so sharp boundaries can be re-drawn from where they are
    still visible.
Training adds an edge term to the L1 loss: λ·L1(Sobel(output), Sobel(target)), which penalises smeared
edges the pixel loss barely notices. Output = input + reconstruction (global residual).

The full text of the paper was not available to us: the design follows its title and abstract (asymmetric
1×K / K×1 convolutions for unidirectional Cartesian scans, an edge-preserving branch), and the configuration
is our choice. `paper`: width 128, 18 asymmetric residual blocks with 3×3 + 1×9 + 9×1 kernels, a 3-layer
edge branch — 16.1 M parameters, the size of the MPI-Mamba paper model (≈ 15–18 M), so that the comparison
is between architectures, not sizes. λ = 0.1.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..base import Restorer

_SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]) / 8.0


def sobel(x: torch.Tensor) -> torch.Tensor:
    """Per-channel Sobel gradients: (B, C, H, W) -> (B, 2C, H, W), d/dx and d/dz of each channel."""
    c = x.shape[1]
    kernel = torch.stack([_SOBEL_X, _SOBEL_X.T]).to(x)  # (2, 3, 3): x- then z-derivative
    kernel = kernel.repeat(c, 1, 1).unsqueeze(1)  # (2C, 1, 3, 3), grouped per input channel
    return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), kernel, groups=c)


class AsymmetricConv(nn.Module):
    """k×k + 1×K + K×1 convolutions summed: a square neighbourhood plus long reach along each axis."""

    def __init__(self, channels: int, square: int, long: int):
        super().__init__()
        self.square = nn.Conv2d(channels, channels, square, padding=square // 2)
        self.along_x = nn.Conv2d(channels, channels, (1, long), padding=(0, long // 2), bias=False)
        self.along_z = nn.Conv2d(channels, channels, (long, 1), padding=(long // 2, 0), bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.square(x) + self.along_x(x) + self.along_z(x)


class AsymmetricResBlock(nn.Module):
    def __init__(self, channels: int, square: int, long: int):
        super().__init__()
        self.body = nn.Sequential(
            AsymmetricConv(channels, square, long), nn.ReLU(inplace=True), AsymmetricConv(channels, square, long)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class AEPNet(Restorer):
    def __init__(
        self,
        in_channels: int = 1,
        width: int = 32,
        blocks: int = 4,
        square_kernel: int = 3,
        long_kernel: int = 7,
        edge_width: int = 16,
        edge_layers: int = 2,
        edge_weight: float = 0.1,
    ):
        super().__init__()
        if square_kernel % 2 == 0 or long_kernel % 2 == 0:
            raise ValueError(f"kernel sizes must be odd, got square={square_kernel}, long={long_kernel}")
        self.edge_weight = edge_weight
        self.head = nn.Conv2d(in_channels, width, 3, padding=1)
        self.body = nn.Sequential(*(AsymmetricResBlock(width, square_kernel, long_kernel) for _ in range(blocks)))
        self.body_end = nn.Conv2d(width, width, 3, padding=1)

        edge = [nn.Conv2d(2 * in_channels, edge_width, 3, padding=1), nn.ReLU(inplace=True)]
        for _ in range(edge_layers - 1):
            edge += [nn.Conv2d(edge_width, edge_width, 3, padding=1), nn.ReLU(inplace=True)]
        self.edge = nn.Sequential(*edge)

        self.fuse = nn.Conv2d(width + edge_width, width, 1)
        self.tail = nn.Conv2d(width, in_channels, 3, padding=1)

    def restore(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.head(x)  # (B, width, H, W)
        feat = feat + self.body_end(self.body(feat))
        edges = self.edge(sobel(x))  # (B, edge_width, H, W)
        feat = self.fuse(torch.cat([feat, edges], dim=1))
        return x + self.tail(feat)

    def training_loss(self, lq: torch.Tensor, gt: torch.Tensor, phase: str = "main") -> dict[str, torch.Tensor]:
        out = self(lq)
        pixel = F.l1_loss(out, gt)
        edge = F.l1_loss(sobel(out), sobel(gt))
        return {"loss": pixel + self.edge_weight * edge, "output": out, "l1": pixel.detach(), "edge": edge.detach()}


PRESETS: dict[str, dict] = {
    "tiny": dict(width=12, blocks=2, long_kernel=5, edge_width=8, edge_layers=2),
    "small": dict(width=32, blocks=6, long_kernel=7, edge_width=16, edge_layers=2),
    "paper": dict(width=128, blocks=18, long_kernel=9, edge_width=32, edge_layers=3),
}
MODEL = AEPNet
