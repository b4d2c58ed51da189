"""Deterministic 8:1:1 train/val/test splits: how many of N go where, and which names, given a seed."""

from __future__ import annotations

import numpy as np

SPLITS = ("train", "val", "test")


def split_counts(n: int) -> dict[str, int]:
    """8:1:1 counts for `n` items: val and test get n // 10 each (at least 1 once n >= 3), train the rest.

    Rounding towards train keeps train at >= 80 %; the floor of one val and one test image lets even a
    toy dataset be evaluated.
    """
    if n < 0:
        raise ValueError(f"number of items must be >= 0, got {n}")
    held_out = max(n // 10, 1) if n >= 3 else 0
    return {"train": n - 2 * held_out, "val": held_out, "test": held_out}


def assign_splits(names: list[str], seed: int = 0) -> dict[str, list[str]]:
    """Shuffle `names` (sorted first, so input order does not matter) with `seed`, cut 8:1:1; each list sorted."""
    ordered = sorted(names)
    if len(set(ordered)) != len(ordered):
        raise ValueError("names to split must be unique")
    order = np.random.default_rng(seed).permutation(len(ordered))
    counts = split_counts(len(ordered))
    out, start = {}, 0
    for split in SPLITS:
        out[split] = sorted(ordered[i] for i in order[start : start + counts[split]])
        start += counts[split]
    return out
