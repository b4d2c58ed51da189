"""Timing shared by the benchmark scripts. They run as `python benchmarks/NAME.py`, which puts this folder
on sys.path, so they import it as `from _timing import best_of`."""

from __future__ import annotations

import time
from typing import Callable


def best_of(repeats: int, fn: Callable[[], object]) -> float:
    """Fastest wall time of `repeats` calls (the machine is shared; the minimum is the least disturbed)."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)
