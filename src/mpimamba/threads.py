"""CPU thread counts, set once per process.

torch's intra-op pool and numba's pool (the `cpu` scan kernels) are sized here, by the `mpimamba`
command at start-up (`--threads`) or by a library user who calls `configure_threads` once. Nothing sets
them per kernel call: resizing pools around every call cost time, and on a busy machine it made OpenMP
workers of the two pools spin against each other.
"""

from __future__ import annotations

import os

import torch

ENV_VAR = "MPIMAMBA_THREADS"
_configured: int | None = None  # the count configure_threads / start_numba_pool settled on


def configure_threads(threads: int | None = None) -> int:
    """Use `threads` CPU threads for torch and for the numba kernels; return the count in use.

    None takes MPIMAMBA_THREADS when set, else keeps torch's count (its default: the physical cores).
    """
    if threads is None and os.environ.get(ENV_VAR):
        try:
            threads = int(os.environ[ENV_VAR])
        except ValueError as err:
            raise ValueError(f"environment variable {ENV_VAR}={os.environ[ENV_VAR]!r} is not a whole number") from err
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be at least 1, got {threads}")
    count = threads or torch.get_num_threads()
    _apply(count)
    return count


def _apply(count: int) -> None:
    """numba's count, then torch's (starting numba's OpenMP pool resets the runtime it shares with torch)."""
    global _configured
    try:
        import numba
    except ImportError:  # the cpu scan backend is unavailable anyway
        pass
    else:
        numba.set_num_threads(min(count, numba.config.NUMBA_NUM_THREADS))
    torch.set_num_threads(count)
    _configured = count


def configured_threads() -> int:
    """The thread count the kernels use: the configured one, else torch's current count."""
    return _configured or torch.get_num_threads()


def start_numba_pool() -> None:
    """Start numba's thread pool at the configured (else torch's current) count, leaving torch's as it was.

    Called once when the cpu kernels are imported, so that a library user who never calls
    `configure_threads` keeps the torch thread count they chose (the pool's start would reset it).
    """
    _apply(configured_threads())


def use_configured_threads() -> None:
    """Give the calling thread numba's configured count. numba keeps the count per Python thread, so a
    kernel launched from a thread other than the one that configured it would otherwise use every core;
    this only sets a thread-local value (no pool is resized)."""
    import numba

    if _configured is not None:
        want = min(_configured, numba.config.NUMBA_NUM_THREADS)
        if numba.get_num_threads() != want:
            numba.set_num_threads(want)
