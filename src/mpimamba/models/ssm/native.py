"""The C backward of the `cpu` scan backend (scan_backward.c), used in place of the numba one when built.

setup.py compiles scan_backward.c into plain shared libraries next to this file on x86-64, one per vector
width (`_scan_backward_avx512*`, 16 channels per vector; `_scan_backward_avx2*`, 8); this module loads the
widest one the CPU runs through ctypes. It computes the numba backward's numbers (tests/test_ssm.py holds
both to the reference) about twice as fast (benchmarks/step.py). It covers the shapes MPI-Mamba trains
with, state size N = 16 and a channel count divisible by the vector width; anything else, a CPU without
AVX2, a machine where the build failed, or MPIMAMBA_SCAN_NATIVE=0 runs the numba backward.

Threads: the (batch, order) items are split into contiguous ranges, one per configured thread
(`mpimamba.threads`); the calling thread runs the first range and a pool of idle-blocking Python threads
(ctypes releases the GIL) the others, so nothing spins while it waits.
"""

from __future__ import annotations

import contextlib
import contextvars
import ctypes
import functools
import importlib.machinery
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from ...threads import configured_threads

ENV_VAR = "MPIMAMBA_SCAN_NATIVE"  # "0": always use the numba backward
# variant: the CPU features its -march level needs (as LLVM names them; LLVM also checks the OS saves the
# vector registers), widest first
VARIANTS = {
    "avx512": ("avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl", "avx2", "fma", "bmi2"),
    "avx2": ("avx", "avx2", "fma", "bmi", "bmi2", "f16c", "lzcnt", "movbe"),
}
_wanted: contextvars.ContextVar[bool] = contextvars.ContextVar("native_backward", default=True)
_pool: ThreadPoolExecutor | None = None
_pool_size = 0


def _host_features() -> dict:
    try:
        from llvmlite import binding
    except ImportError:  # llvmlite comes with numba; without it the cpu backend is gone anyway
        return {}
    return dict(binding.get_host_cpu_features())


def _library_file(variant: str) -> Path | None:
    here = Path(__file__).parent
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        path = here / f"_scan_backward_{variant}{suffix}"
        if path.is_file():
            return path
    return None


@functools.cache
def library() -> tuple[str, ctypes.CDLL] | None:
    """(variant, loaded library) of the widest built variant this CPU runs, or None."""
    features = _host_features()
    for variant, needs in VARIANTS.items():
        path = _library_file(variant)
        if path is None or not all(features.get(f) for f in needs):
            continue
        lib = ctypes.CDLL(str(path))
        lib.scan_vector_width.restype = lib.scan_state_size.restype = ctypes.c_int64
        lib.scan_backward.restype = None
        lib.scan_backward.argtypes = [ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p, ctypes.c_int64,
                                      *[ctypes.c_void_p] * 15]
        return variant, lib
    return None


@contextlib.contextmanager
def use_native_backward(wanted: bool):
    """Inside the block, the C backward runs only if `wanted` (False: the numba one, e.g. to compare them)."""
    token = _wanted.set(wanted)
    try:
        yield
    finally:
        _wanted.reset(token)


def usable(n_state: int, n_channels: int) -> bool:
    """Whether `backward` will run for this state size and channel count (see the module docstring)."""
    if not _wanted.get() or os.environ.get(ENV_VAR, "1") == "0":
        return False
    found = library()
    if found is None:
        return False
    lib = found[1]
    return n_state == lib.scan_state_size() and n_channels % lib.scan_vector_width() == 0


def _workers(count: int) -> ThreadPoolExecutor:
    global _pool, _pool_size
    if _pool is None or _pool_size != count:
        if _pool is not None:
            _pool.shutdown(wait=True)
        _pool, _pool_size = ThreadPoolExecutor(count, thread_name_prefix="mpimamba-scan"), count
    return _pool


def backward(u, delta, bias, softplus, A, B, C, positions: np.ndarray, ckpt, gy,
             du, ddelta, dB, dC, dA_part, dbias_part) -> None:
    """The outputs du ... dbias_part filled in place; arguments and layouts as `cpu._backward_kernel`'s, as
    contiguous CPU tensors (positions: a contiguous int64 array)."""
    lib = library()[1]
    tensors = (u, delta, bias, A, B, C, positions, ckpt, gy, du, ddelta, dB, dC, dA_part, dbias_part)
    for t in tensors:  # the C code indexes raw memory: refuse anything it would misread
        ok = t.flags.c_contiguous and t.dtype == np.int64 if isinstance(t, np.ndarray) else t.is_contiguous()
        if not ok:
            raise ValueError("native scan backward: every array must be contiguous (positions int64)")
    batch, length, orders, channels = delta.shape
    dims = (ctypes.c_int64 * 7)(batch, length, orders, channels, u.shape[2], gy.shape[2], ckpt.shape[2])
    pointers = [t.ctypes.data if isinstance(t, np.ndarray) else t.data_ptr() for t in tensors]
    items = batch * orders
    count = max(1, min(configured_threads(), items))
    bounds = [items * i // count for i in range(count + 1)]

    def run(i):
        lib.scan_backward(bounds[i], bounds[i + 1], ctypes.byref(dims), int(softplus), *pointers)

    if count == 1:
        run(0)
        return
    futures = [_workers(count - 1).submit(run, i) for i in range(1, count)]
    run(0)
    for f in futures:
        f.result()
