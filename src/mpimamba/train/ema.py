"""An exponential moving average of the network's weights (`TrainConfig.ema_decay`).

After the t-th optimiser step of a phase, average ← d_t·average + (1 − d_t)·weights for every parameter,
with d_t = min(d, (1 + t) / (10 + t)): the average spans about 1 / (1 − d) steps once t is large, and
about the last t / 9 steps before that, so it never holds much of the weights a phase started from (for
a phase that trains fresh parameters, random ones: MPI-Mamba's and DiffIR's denoisers in phase 2). It is
restarted from the weights at the start of every phase, so parameters a phase freezes are averaged as the
values that phase trains against. Why at all: the shipped model's polish stages gained most of their
validation PSNR in the cosine tail, where a small learning rate averages out the step-to-step noise of the
weights (`experiments/results/mass-polish.md`: 20.3–22.3 dB while the lr was constant, 22.7 dB at the
end); an average of the weights may get that effect without waiting for the lr to fall.

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
        self.start_phase(model)

    @torch.no_grad()
    def start_phase(self, model: nn.Module) -> None:
        """Restart the average from the model's weights (at the start of a phase)."""
        self.average = {name: p.detach().clone() for name, p in model.named_parameters()}
        self.updates = 0

    def current_decay(self) -> float:
        """d_t of the next update, the t-th of the phase (see the module doc)."""
        t = self.updates + 1
        return min(self.decay, (1 + t) / (10 + t))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        weight = 1.0 - self.current_decay()
        self.updates += 1
        for name, p in model.named_parameters():
            self.average[name].lerp_(p.detach(), weight)  # a + (1 − d_t)·(p − a)

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

    def state_dict(self) -> dict:
        return {"weights": {name: a.clone() for name, a in self.average.items()}, "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        weights = state["weights"]
        if set(weights) != set(self.average):
            missing, extra = sorted(set(self.average) - set(weights)), sorted(set(weights) - set(self.average))
            raise ValueError(f"the checkpoint's weight average does not match the network (missing {missing[:3]}, "
                             f"unexpected {extra[:3]})")
        for name, a in self.average.items():
            a.copy_(weights[name].to(a.device, a.dtype))
        self.updates = int(state["updates"])
