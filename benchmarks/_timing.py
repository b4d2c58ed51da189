"""Timing shared by the benchmark scripts. They run as `python benchmarks/NAME.py`, which puts this folder
on sys.path, so they import it as `from _timing import best_of`."""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path
from typing import Callable

import torch

from mpimamba.fileutil import write_text_atomic


def best_of(repeats: int, fn: Callable[[], object]) -> float:
    """Fastest wall time of `repeats` calls (the machine is shared; the minimum is the least disturbed)."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:  # the model name is more telling than the architecture, where Linux exposes it
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{cpu}, {os.cpu_count()} logical CPUs, torch {torch.__version__} with {torch.get_num_threads()} "
            f"thread(s), Python {platform.python_version()}, {platform.system()} {platform.release()}")


def load() -> str:
    """The 1/5/15-minute load averages: CPU timings on a shared machine mean little without them."""
    try:
        return "load average " + " / ".join(f"{v:.1f}" for v in os.getloadavg())
    except OSError:
        return "load average unknown"


def replace_block(path: Path, name: str, text: str) -> None:
    """Write `text` between the `<!-- begin NAME -->` and `<!-- end NAME -->` lines of the Markdown file
    `path` (appended when they are not there yet), leaving the rest of the file as it is; atomically."""
    begin, end = f"<!-- begin {name} -->", f"<!-- end {name} -->"
    old = Path(path).read_text() if Path(path).exists() else ""
    block = f"{begin}\n{text.rstrip()}\n{end}"
    if begin in old and end in old:
        head, rest = old.split(begin, 1)
        new = head + block + rest.split(end, 1)[1]
    else:
        new = (old.rstrip() + "\n\n" if old.strip() else "") + block + "\n"
    write_text_atomic(path, new)
