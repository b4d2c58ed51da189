"""The shipped model: where its weights live, what it was trained on, the recipe that makes it, its loader.

The weights (`weights/mpi_mamba_small.safetensors` + `.json`) are MPI-Mamba `small`, trained by
`experiments/default_model.py` on the simulated stream of `PROTOCOL`; the demo draws its unseen pairs
from the same protocol. `install` is how the recipe puts a trained run into the package (atomically, so
an interrupted install never leaves half a model), and the model card `docs/model-card.md` is generated
from the installed model by `experiments/model_card.py`.
"""

from __future__ import annotations

import json
from pathlib import Path

from .fileutil import atomic_path, write_text_atomic
from .physics.protocols import PROTOCOLS

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
MODEL_PATH = WEIGHTS_DIR / "mpi_mamba_small.safetensors"
METHOD, PRESET = "mpi_mamba", "small"
PROTOCOL = PROTOCOLS["shipped-v1"]  # the training data of the installed weights
RECIPE = "experiments/default_model.py"


def model_path() -> Path:
    """The shipped weights; FileNotFoundError (saying what to do) when they are not installed."""
    if not MODEL_PATH.is_file():
        raise FileNotFoundError(
            f"the shipped model {MODEL_PATH} is not installed (it is trained and added by the maintainers, "
            f"with {RECIPE}); pass --model PATH to use your own checkpoint"
        )
    return MODEL_PATH


def load(map_location="cpu"):
    """The shipped network, ready for `mpimamba.infer.Restoration`."""
    from .models.checkpoint import load_model

    return load_model(model_path(), map_location=map_location)


def install(run: Path, training: dict) -> Path:
    """Copy RUN/model.safetensors into the package and write its JSON with the `training` record added."""
    meta = json.loads((run / "model.json").read_text())
    meta["training"] = training
    WEIGHTS_DIR.mkdir(parents=True, exist_ok=True)
    with atomic_path(MODEL_PATH) as tmp:
        tmp.write_bytes((run / "model.safetensors").read_bytes())
    write_text_atomic(MODEL_PATH.with_suffix(".json"), json.dumps(meta, indent=2) + "\n")
    return MODEL_PATH
