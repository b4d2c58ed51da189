"""An exponential moving average of the network's weights (`TrainConfig.ema_decay`).

After every optimiser step, average ← d·average + (1 − d)·weights, for every parameter (a frozen one does
not change, so its average stays equal to it). The average spans about 1 / (1 − d) steps: with d = 0.999,
the last thousand. Why: the shipped model's polish stages gained most of their validation PSNR in the
cosine tail, where a small learning rate averages out the step-to-step noise of the weights
(`experiments/results/mass-polish.md`: 20.3–22.3 dB while the lr was constant, 22.7 dB at the end); an
average of the weights gets that effect without waiting for the lr to fall.

The average is what the run validates, checkpoints (beside the weights, so a resumed run continues it
exactly) and writes as RUN/model; the optimiser keeps stepping the weights themselves.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn


class WeightAverage:
    def __init__(self, model: nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"ema_decay must lie in (0, 1), got {decay}")
        self.decay = float(decay)
        self.average = {name: p.detach().clone() for name, p in model.named_parameters()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for name, p in model.named_parameters():
            self.average[name].lerp_(p.detach(), 1.0 - self.decay)  # a + (1 − d)·(p − a)

    @contextmanager
    def applied(self, model: nn.Module):
        """The model holds the averaged weights inside the block and its own weights again after it."""
        params = dict(model.named_parameters())
        saved = {name: p.detach().clone() for name, p in params.items()}
        with torch.no_grad():
            for name, p in params.items():
                p.copy_(self.average[name])
        try:
            yield model
        finally:
            with torch.no_grad():
                for name, p in params.items():
                    p.copy_(saved[name])

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Leave the averaged weights in the model (at the end of training)."""
        for name, p in model.named_parameters():
            p.copy_(self.average[name])

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {name: a.clone() for name, a in self.average.items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if set(state) != set(self.average):
            missing, extra = sorted(set(self.average) - set(state)), sorted(set(state) - set(self.average))
            raise ValueError(f"the checkpoint's weight average does not match the network (missing {missing[:3]}, "
                             f"unexpected {extra[:3]})")
        for name, a in self.average.items():
            a.copy_(state[name].to(a.device, a.dtype))
