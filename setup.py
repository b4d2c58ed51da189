"""Build configuration beyond pyproject.toml: the C kernels of the `cpu` scan backend.

Two variants of models/ssm/scan_kernels.c on x86-64 (AVX-512 with 16 channels per vector, AVX2 with 8),
loaded at run time by models/ssm/native.py, which picks the one the CPU supports. Both are optional: where
the compiler is missing or refuses a flag the install still succeeds and the numba kernels run instead.
Elsewhere (ARM, other CPUs) nothing is built.
"""

import platform

from setuptools import Extension, setup

SOURCE = "src/mpimamba/models/ssm/scan_kernels.c"
VARIANTS = {"avx512": ("x86-64-v4", 16), "avx2": ("x86-64-v3", 8)}  # name: (-march level, channels per vector)


def scan_extensions() -> list[Extension]:
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return []
    return [Extension(f"mpimamba.models.ssm._scan_kernels_{name}", [SOURCE], optional=True,
                      define_macros=[("W", str(width))],
                      extra_compile_args=["-O3", f"-march={march}", "-ffp-contract=fast", "-Wno-psabi"])
            for name, (march, width) in VARIANTS.items()]


setup(ext_modules=scan_extensions())
