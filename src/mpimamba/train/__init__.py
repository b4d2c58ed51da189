"""One training loop for every method, MPI-Mamba's two phases, distributed data parallel."""

from .config import TrainConfig
from .data import TrainData
from .loop import train

__all__ = ["TrainConfig", "TrainData", "train"]
