"""The C kernels of the `cpu` scan backend (scan_kernels.c), used in place of the numba ones when built.

setup.py compiles scan_kernels.c into plain shared libraries next to this file on x86-64, one per vector
width (`_scan_kernels_avx512*`, 16 channels per vector; `_scan_kernels_avx2*`, 8); this module loads the
widest one the CPU runs through ctypes. They compute the numba kernels' numbers (tests/test_ssm.py holds
both to the reference), forward+backward about 1.5× as fast at SS2D's shape on AVX2 (benchmarks/step.py).
They cover the shapes MPI-Mamba runs, state size N = 16 and a channel count divisible by the vector width;
anything else, a CPU without AVX2, a machine where the build failed, or MPIMAMBA_SCAN_NATIVE=0 runs the numba
kernels.

Threads: the (batch, order) items are split into contiguous ranges, a few per configured thread
(`mpimamba.threads`), which the calling thread and a pool of idle-blocking Python threads (ctypes
releases the GIL) take in turn: nothing spins while it waits, and on a core that other work shares the
thread there simply takes fewer ranges.
"""

from __future__ import annotations

import contextlib
import contextvars
import ctypes
import functools
import importlib.machinery
import itertools
import os
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from ...threads import configured_threads

ENV_VAR = "MPIMAMBA_SCAN_NATIVE"  # "0": always use the numba kernels
ABI_VERSION = 1  # scan_kernels.c's scan_abi_version(): a library built from other source is not used
# variant: the CPU features its -march level needs (as LLVM names them; LLVM also checks the OS saves the
# vector registers), widest first
VARIANTS = {
    "avx512": ("avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl", "avx2", "fma", "bmi2"),
    "avx2": ("avx", "avx2", "fma", "bmi", "bmi2", "f16c", "lzcnt", "movbe"),
}
_wanted: contextvars.ContextVar[bool] = contextvars.ContextVar("native_scan", default=True)
_pool: ThreadPoolExecutor | None = None
_pool_size = 0
_pool_lock = threading.Lock()


def _host_features() -> dict:
    try:
        from llvmlite import binding
    except ImportError:  # llvmlite comes with numba; without it the cpu backend is gone anyway
        return {}
    return dict(binding.get_host_cpu_features())


def _library_file(variant: str) -> Path | None:
    here = Path(__file__).parent
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        path = here / f"_scan_kernels_{variant}{suffix}"
        if path.is_file():
            return path
    return None


def runnable_variants() -> list[str]:
    """The built variants this CPU can run and whose library matches this source, widest first."""
    features = _host_features()
    return [v for v, needs in VARIANTS.items()
            if _library_file(v) is not None and all(features.get(f) for f in needs) and load(v) is not None]


@functools.cache
def load(variant: str) -> ctypes.CDLL | None:
    """The library of one built variant, its functions typed for ctypes; None (with a warning) when it was
    built from another version of scan_kernels.c."""
    path = _library_file(variant)
    lib = ctypes.CDLL(str(path))
    version = getattr(lib, "scan_abi_version", None)  # absent in libraries built before it existed
    if version is not None:
        version.restype = ctypes.c_int64
    if version is None or version() != ABI_VERSION:
        warnings.warn(f"{path} was built from another version of scan_kernels.c and is not used (the numba "
                      "kernels run instead); reinstall the package (pip install -e .) to rebuild it", stacklevel=2)
        return None
    return declare_signatures(lib)


def declare_signatures(lib: ctypes.CDLL) -> ctypes.CDLL:
    """`lib` with its kernels' argument and result types set (ctypes checks none of them against the C)."""
    lib.scan_vector_width.restype = lib.scan_state_size.restype = ctypes.c_int64
    lib.scan_forward.restype = lib.scan_backward.restype = None
    head = [ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p, ctypes.c_int64]  # first, last, dims, softplus
    lib.scan_forward.argtypes = [*head, ctypes.c_int64, *[ctypes.c_void_p] * 9]
    lib.scan_backward.argtypes = [*head, *[ctypes.c_void_p] * 15]
    return lib


class Library(NamedTuple):
    """A loaded variant and the shapes it takes, read once (usable() runs on every scan)."""

    variant: str
    lib: ctypes.CDLL
    vector_width: int  # channels per vector: the channel count must be a multiple
    state_size: int  # the only N it runs

    @classmethod
    def of(cls, variant: str) -> Library:
        return cls.wrapping(variant, load(variant))

    @classmethod
    def wrapping(cls, variant: str, lib: ctypes.CDLL) -> Library:
        """A typed library (`declare_signatures`) with its shapes read."""
        return cls(variant, lib, lib.scan_vector_width(), lib.scan_state_size())


@functools.cache
def library() -> Library | None:
    """The widest built variant this CPU runs, or None."""
    variants = runnable_variants()
    return Library.of(variants[0]) if variants else None


@contextlib.contextmanager
def use_native_kernels(wanted: bool):
    """Inside the block the C kernels run only if `wanted` (False: the numba ones, e.g. to compare them).
    A backward runs the kernel chosen when it runs, so put the backward inside the block too."""
    token = _wanted.set(wanted)
    try:
        yield
    finally:
        _wanted.reset(token)


def usable(n_state: int, n_channels: int) -> bool:
    """Whether `forward` and `backward` run for this state size and channel count (see the module docstring)."""
    if not _wanted.get() or os.environ.get(ENV_VAR, "1") == "0":
        return False
    found = library()
    return (found is not None and n_state == found.state_size and n_channels > 0
            and n_channels % found.vector_width == 0)


def _submit(count: int, fn) -> list:
    """`fn` submitted `count` times to the helper pool, which is made larger when needed. Under the lock:
    another Python thread scanning at the same time must not replace the pool between lookup and submit."""
    global _pool, _pool_size
    with _pool_lock:
        if _pool is None or _pool_size < count:
            if _pool is not None:
                _pool.shutdown(wait=False)  # what was queued on it still runs
            _pool, _pool_size = ThreadPoolExecutor(count, thread_name_prefix="mpimamba-scan"), count
        return [_pool.submit(fn) for _ in range(count)]


def _pointers(arrays) -> list[int]:
    """Addresses of contiguous tensors / numpy arrays: the C code indexes raw memory, so refuse anything else."""
    pointers = []
    for a in arrays:
        if isinstance(a, np.ndarray):
            if not (a.flags.c_contiguous and a.dtype == np.int64):
                raise ValueError("native scan: positions must be a contiguous int64 array")
            pointers.append(a.ctypes.data)
        else:
            if not (a.is_contiguous() and a.device.type == "cpu" and a.dtype in (torch.float32, torch.float64)):
                raise ValueError("native scan: every tensor must be a contiguous float32/float64 CPU tensor")
            pointers.append(a.data_ptr())
    return pointers


CHUNKS_PER_THREAD = 4  # more ranges than threads: a thread slowed by other work on its core takes fewer


def _run_items(kernel, items: int, dims, *args) -> None:
    """kernel(first, last, dims, *args) over [0, items), split into contiguous ranges that the configured
    threads take in turn from a shared counter (the calling thread is one of them)."""
    count = max(1, min(configured_threads(), items))
    chunks = min(items, CHUNKS_PER_THREAD * count) if count > 1 else 1
    bounds = [items * i // chunks for i in range(chunks + 1)]
    taken = itertools.count()  # next() on it is atomic under the GIL

    def work():
        while (i := next(taken)) < chunks:
            kernel(bounds[i], bounds[i + 1], ctypes.byref(dims), *args)

    futures = _submit(count - 1, work) if count > 1 else []
    try:
        work()
    finally:  # also on Ctrl-C: the helpers write into the caller's tensors, which must outlive them
        for f in futures:
            f.result()


def _dims(u, delta, kg: int, segments: int):
    batch, length, orders, channels = delta.shape
    return (ctypes.c_int64 * 7)(batch, length, orders, channels, u.shape[2], kg, segments)


def forward(u, delta, bias, softplus, A, B, C, positions: np.ndarray, y, ckpt, save: bool) -> None:
    """y and (when `save`) ckpt filled in place; arguments and layouts as `cpu._forward_kernel`'s."""
    dims = _dims(u, delta, 1, ckpt.shape[2])
    _run_items(library().lib.scan_forward, delta.shape[0] * delta.shape[2], dims, int(softplus), int(save),
               *_pointers((u, delta, bias, A, B, C, positions, y, ckpt)))


def backward(u, delta, bias, softplus, A, B, C, positions: np.ndarray, ckpt, gy,
             du, ddelta, dB, dC, dA_part, dbias_part) -> None:
    """The outputs du ... dbias_part filled in place; arguments and layouts as `cpu._backward_kernel`'s."""
    dims = _dims(u, delta, gy.shape[2], ckpt.shape[2])
    _run_items(library().lib.scan_backward, delta.shape[0] * delta.shape[2], dims, int(softplus),
               *_pointers((u, delta, bias, A, B, C, positions, ckpt, gy, du, ddelta, dB, dC, dA_part, dbias_part)))
