"""Training terms beside each network's own loss, each switched on by its weight in TrainConfig.

The local-mass term (`--mass-weight`): the networks' pixel L1 loss asks for the per-pixel median of what
the input allows. Where a thin structure's exact position is uncertain (a vessel branch narrower than the
PSF), the median pixel of a sparse line is lower than its mean, so the branch comes back with too little
tracer: the shipped v6 returned 0.76 of the vessels' mass on the demo pairs while its blurred output
agreed with the input within the noise. The term compares the tracer per MASS_BLOCK × MASS_BLOCK block of
output and target (an L1 on the block means), which a shift inside a block does not change: it asks for
the right amount of tracer in each neighbourhood, and leaves where exactly it sits to the pixel loss.

The squared-error term (`--mse-weight`): the mean squared pixel error, the loss whose minimiser is the
per-pixel conditional mean of what the input allows instead of its median. Two reasons to add it: PSNR,
the score every table ranks by, is this error on a log scale, and the mean keeps the expected amount of
tracer where the median drops part of it (a faint, uncertainly placed branch), for any block size.

The edge term (`--edge-weight`): an L1 between the image gradients (differences of neighbouring pixels
along x and along z) of output and target, i.e. the L1 of the error after a high-pass. Fine-tuning stages
from a sharp model widened its restored point source along the drive axis while PSNR rose
(`experiments/results/mse3-polish.md`). The pixel losses weigh an error the same at every spatial
frequency; a difference of neighbours weighs it by 2|sin(πf)| along its axis: 0 for an offset and little for a
smooth error (a level or mass error, which the other terms cover), 2 for the finest detail, which is what sets a point's width.

TERMS below is the one list of them. A new term is a loss function, its entry in TERMS, a TrainConfig field
`<name>_weight` defaulting to 0 and a line in cli.TERM_HELP (tests/test_terms.py holds the last three together);
the training loop, the log's columns, the CLI flags, `experiments/default_model.py`, `training_terms.py` and the
model card follow TERMS.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from ..refine import consistency_loss

MASS_BLOCK = 8  # pixels per block side: 2 mm at 0.25 mm, about the tangential FWHM at 9 T/m


def local_mass_loss(out: torch.Tensor, gt: torch.Tensor, block: int = MASS_BLOCK) -> torch.Tensor:
    """Mean |block mean of out − block mean of gt| over blocks of `block` px; out, gt (B, C, H, W).

    Blocks at the bottom and right edges that the image does not fill are averaged over the pixels it has
    (ceil_mode), so every pixel counts for any H, W.
    """
    if out.shape != gt.shape or out.ndim != 4:
        raise ValueError(f"local_mass_loss expects two (B, C, H, W) tensors of one shape, got "
                         f"{tuple(out.shape)} and {tuple(gt.shape)}")
    pool = lambda x: F.avg_pool2d(x, block, ceil_mode=True)  # noqa: E731  (B, C, ⌈H/block⌉, ⌈W/block⌉)
    return (pool(out) - pool(gt)).abs().mean()


def squared_error_loss(out: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """Mean of (out − gt)² over every pixel; out, gt (B, C, H, W) of one shape."""
    if out.shape != gt.shape or out.ndim != 4:
        raise ValueError(f"squared_error_loss expects two (B, C, H, W) tensors of one shape, got "
                         f"{tuple(out.shape)} and {tuple(gt.shape)}")
    return F.mse_loss(out, gt)


def edge_loss(out: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """Mean |Δ out − Δ gt| over the differences of neighbouring pixels along W and along H (the two means
    added); out, gt (B, C, H, W) of one shape, H and W ≥ 2."""
    if out.shape != gt.shape or out.ndim != 4 or min(out.shape[-2:]) < 2:
        raise ValueError(f"edge_loss expects two (B, C, H, W) tensors of one shape with H, W >= 2, got "
                         f"{tuple(out.shape)} and {tuple(gt.shape)}")
    error = out - gt  # the gradients' difference is the difference's gradient
    along_w = error[..., :, 1:] - error[..., :, :-1]  # (B, C, H, W-1)
    along_h = error[..., 1:, :] - error[..., :-1, :]  # (B, C, H-1, W)
    return along_w.abs().mean() + along_h.abs().mean()


@dataclass(frozen=True)
class Term:
    """One optional training term: `TrainConfig.<name>_weight` switches it on (0 = off), `--<name>-weight` sets
    that weight on the command line (cli.TERM_HELP says what it asks), the training log keeps the term before
    its weight in the column `name`, and the model card calls it "the <title> term"."""

    name: str
    title: str
    # (output, input, target, geometry) -> scalar; all (B, C, H, W) but geometry, (B, 2) or None (train.data)
    loss: Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]
    needs_geometry: bool = False  # each pair's scan geometry: simulated streams only

    @property
    def field(self) -> str:
        """The TrainConfig field holding its weight."""
        return f"{self.name}_weight"


# the one list of optional terms; its order is the training log's column order (keep it: older logs are read back)
TERMS: tuple[Term, ...] = (
    Term("physics", "physics-consistency",
         lambda out, lq, gt, geometry: consistency_loss(out, lq, geometry.to(lq.device)), needs_geometry=True),
    Term("mass", "local-mass", lambda out, lq, gt, geometry: local_mass_loss(out, gt)),
    Term("mse", "squared-error", lambda out, lq, gt, geometry: squared_error_loss(out, gt)),
    Term("edge", "edge", lambda out, lq, gt, geometry: edge_loss(out, gt)),
)


def switched_on(cfg) -> list[tuple[Term, float]]:
    """[(term, its weight)] for the terms a TrainConfig switches on, in TERMS order."""
    return [(term, float(getattr(cfg, term.field))) for term in TERMS if getattr(cfg, term.field) > 0]
