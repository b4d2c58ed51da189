"""Build configuration beyond pyproject.toml: the C kernels of the `cpu` scan backend.

Two variants of models/ssm/scan_kernels.c on x86-64 (AVX-512 with 16 channels per vector, AVX2 with 8),
loaded at run time by models/ssm/native.py, which picks the one the CPU supports. Both are optional: where
the compiler is missing or refuses a flag the install still succeeds and the numba kernels run instead.
Elsewhere (ARM, other CPUs) nothing is built.
"""

import importlib.util
import platform

from setuptools import Extension, setup


def kernel_build():
    """src/mpimamba/models/ssm/kernel_build.py (the variants and flags), loaded alone: the package is not
    importable while it is being built."""
    spec = importlib.util.spec_from_file_location("kernel_build", "src/mpimamba/models/ssm/kernel_build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def scan_extensions() -> list[Extension]:
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return []
    build = kernel_build()
    return [Extension(f"mpimamba.models.ssm._scan_kernels_{name}", [build.SOURCE], optional=True,
                      define_macros=[("W", str(width))], extra_compile_args=build.compile_args(march))
            for name, (march, width) in build.VARIANTS.items()]


setup(ext_modules=scan_extensions())
