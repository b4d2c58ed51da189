"""Networks: MPI-Mamba (`mpi_mamba`) and the seven baselines, all through `build(name, preset, **overrides)`."""

from .base import Restorer, count_parameters
from .checkpoint import load_model, save_model
from .registry import METHODS, build, presets

__all__ = ["Restorer", "build", "presets", "METHODS", "count_parameters", "save_model", "load_model"]
