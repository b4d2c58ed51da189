"""The run's training log: `RUN/log.csv` (one row per step) and TensorBoard events when installed.

On resume the rows a killed run wrote after its last checkpoint are dropped, so the log reads as if
the run had never stopped.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from ..fileutil import write_text_atomic
from .terms import TERMS

# val_loss: the phase's training loss on the validation pairs; val_psnr: PSNR of the inference output
# model(lq) in eval mode, in every phase (see train.loop.validate); then one column per optional training term,
# named as in train.terms.TERMS: the term before its weight (its loss function there), included in `loss`, empty
# where the run does not switch it on
COLUMNS = ("phase", "step", "loss", "lr", "img_per_s", "val_loss", "val_psnr", *(term.name for term in TERMS))


def _fmt(value) -> str:
    if value is None:
        return ""
    return f"{value:.6g}" if isinstance(value, float) else str(value)


class RunLog:
    def __init__(self, run: Path, phases: tuple[str, ...], keep_until: tuple[int, int] | None = None):
        """`keep_until` = (phase index, step): keep the existing rows up to it (resume); None = fresh log."""
        self.path = run / "log.csv"
        self.phases = phases
        kept = self._rows_until(keep_until) if keep_until is not None else []
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(COLUMNS)
        writer.writerows(kept)
        write_text_atomic(self.path, buf.getvalue())
        self._file = open(self.path, "a", newline="")
        self._csv = csv.writer(self._file, lineterminator="\n")
        self._tb = self._tensorboard(run)

    def _rows_until(self, until: tuple[int, int]) -> list[list[str]]:
        if not self.path.is_file():
            return []
        with open(self.path, newline="") as f:
            rows = list(csv.reader(f))[1:]
        kept = [r for r in rows if (self.phases.index(r[0]), int(r[1])) <= until]
        return [r + [""] * (len(COLUMNS) - len(r)) for r in kept]  # a log of an older version lacks later columns

    @staticmethod
    def _tensorboard(run: Path):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # tensorboard is optional
            return None
        return SummaryWriter(str(run / "tensorboard"))

    def write(self, phase: str, step: int, **values) -> None:
        self._csv.writerow([phase, step] + [_fmt(values.get(c)) for c in COLUMNS[2:]])
        self._file.flush()
        if self._tb is not None:
            for key, value in values.items():
                if value is not None:
                    self._tb.add_scalar(f"{phase}/{key}", value, step)

    def close(self) -> None:
        self._file.close()
        if self._tb is not None:
            self._tb.close()
