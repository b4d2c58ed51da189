"""The shipped model: where its weights live, what it was trained on, the recipe that makes it, its loader.

The weights (`weights/mpi_mamba_small.safetensors` + `.json`) are MPI-Mamba `small`, trained by
`experiments/default_model.py` on the simulated stream of `BASE_PROTOCOL`, then fine-tuned on `PROTOCOL`; the JSON records the protocol it
was trained on (`protocol()`), and the demo draws its unseen pairs from that protocol. `install` is how the recipe puts a trained run into the package (atomically, so
an interrupted install never leaves half a model), and the model card `docs/model-card.md` is generated
from the installed model by `experiments/model_card.py`.
"""

from __future__ import annotations

import json
from pathlib import Path

from .fileutil import atomic_path
from .physics.protocols import PROTOCOLS, Protocol

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
MODEL_PATH = WEIGHTS_DIR / "mpi_mamba_small.safetensors"
METHOD, PRESET = "mpi_mamba", "small"
# the recipe's training data: its base stage's, then its tune stage's (the installed model's own: `protocol()`)
BASE_PROTOCOL = PROTOCOLS["default"]
PROTOCOL = PROTOCOLS["multiscale"]
FIRST_PROTOCOL = PROTOCOLS["shipped-v1"]  # that of the first shipped model, whose JSON predates protocols
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


def protocol(model_json: Path | None = None) -> Protocol:
    """The protocol a model was trained on, from its JSON's training record (default: the shipped model's);
    `FIRST_PROTOCOL` for a model whose record names none (the first shipped model predates protocols)."""
    path = model_json or MODEL_PATH.with_suffix(".json")
    try:
        training = json.loads(Path(path).read_text()).get("training", {})
        return Protocol.from_dict(training["protocol"])
    except (OSError, ValueError, KeyError, TypeError):
        return FIRST_PROTOCOL


def recorded_stages(training: dict) -> tuple[list[str], str]:
    """(earlier stages in training order, the installed stage's own name) of a model JSON's training record.

    A staged recipe records its earlier stages under their names, in training order in "stage_order", and the
    installed stage's settings at the top level, named by "stage". Older records: a v4 one (a polish stage
    before "stage_order") came after base and tune; a v3 one (base + tune, before stages were named) is a
    tune stage's output after base. Those defaults are not checked against the record's keys (a v1/v2 record
    holds no earlier stage); an explicit "stage_order" naming a stage the record lacks is refused."""
    stage = training.get("stage", "tune")
    if "stage_order" in training:
        missing = [name for name in training["stage_order"] if name not in training]
        if missing:
            raise ValueError(f"the model's training record lists stages it does not hold: {', '.join(missing)}")
        return list(training["stage_order"]), stage
    return (["base", "tune"] if stage != "tune" else ["base"]), stage


def install(run: Path, training: dict) -> Path:
    """Copy RUN/model.safetensors into the package and write its JSON with the `training` record added.

    Both files are written to temporary names first and then renamed, one right after the other, so an
    interruption leaves the old pair or the new one (but for the instant between the two renames).
    """
    meta = json.loads((run / "model.json").read_text())
    meta["training"] = training
    WEIGHTS_DIR.mkdir(parents=True, exist_ok=True)
    with atomic_path(MODEL_PATH) as weights_tmp, atomic_path(MODEL_PATH.with_suffix(".json")) as json_tmp:
        weights_tmp.write_bytes((run / "model.safetensors").read_bytes())
        json_tmp.write_text(json.dumps(meta, indent=2) + "\n")
    return MODEL_PATH
