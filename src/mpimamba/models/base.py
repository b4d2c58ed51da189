"""The interface every network follows: (B, C, H, W) -> (B, C, H, W) for any H, W, plus training phases.

A subclass implements `restore(x)` on an input whose height and width are multiples of
`size_multiple`; `forward` pads (reflect) and crops back, so callers never think about sizes.

Training: `phases` names the phases in order (one for plain networks; MPI-Mamba and DiffIR have two).
`training_loss(lq, gt, phase)` returns a dict with at least "loss" (scalar) and "output" (B, C, H, W);
`phase_parameters(phase)` gives the parameters the optimiser updates in that phase. The training loop
knows nothing else about a method.
"""

from __future__ import annotations

from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn


def pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Pad (B, C, H, W) at the bottom/right to multiples of `multiple`; return the padded tensor and (H, W)."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        # reflect needs the pad to be smaller than the side; tiny inputs fall back to replicate
        mode = "reflect" if ph < h and pw < w else "replicate"
        x = F.pad(x, (0, pw, 0, ph), mode=mode)
    return x, (h, w)


class Restorer(nn.Module):
    size_multiple: int = 1
    phases: tuple[str, ...] = ("main",)

    def restore(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4:
            raise ValueError(f"expected a (B, C, H, W) tensor, got shape {tuple(x.shape)}")
        xp, (h, w) = pad_to_multiple(x, self.size_multiple)
        return self.restore(xp)[..., :h, :w]

    def training_loss(self, lq: torch.Tensor, gt: torch.Tensor, phase: str = "main") -> dict[str, torch.Tensor]:
        out = self(lq)
        return {"loss": F.l1_loss(out, gt), "output": out}

    def phase_parameters(self, phase: str = "main") -> Iterator[nn.Parameter]:
        return (p for p in self.parameters() if p.requires_grad)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
