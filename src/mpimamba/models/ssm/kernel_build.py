"""How the C scan kernels are compiled, in one place for setup.py and benchmarks/scan_kernel_revision.py.

setup.py loads this file by its path before the package is installed, so it imports nothing.
"""

SOURCE = "src/mpimamba/models/ssm/scan_kernels.c"  # relative to the repository root
VARIANTS = {"avx512": ("x86-64-v4", 16), "avx2": ("x86-64-v3", 8)}  # name: (-march level, channels per vector)


def compile_args(march: str) -> list[str]:
    """gcc's flags for one variant, besides the vector width (-DW)."""
    return ["-O3", f"-march={march}", "-ffp-contract=fast", "-Wno-psabi"]
