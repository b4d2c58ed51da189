import numpy as np
import pytest
import torch

from mpimamba.data.io import write_image
from mpimamba.data.paired import PairedFolder
from mpimamba.data.splits import assign_splits, split_counts
from mpimamba.data.transforms import N_MODES, apply_mode, paired_patch


def make_split(root, names, shape=(20, 24), split="train", suffix=".npy", seed=0):
    rng = np.random.default_rng(seed)
    for name in names:
        gt = rng.random(shape).astype(np.float32)
        write_image(root / split / "gt" / f"{name}{suffix}", gt)
        write_image(root / split / "lq" / f"{name}{suffix}", gt / 2)
    return root


def test_eight_modes_are_distinct_and_invertible(rng):
    x = rng.random((5, 5))
    outs = [apply_mode(x, m) for m in range(N_MODES)]
    assert len({o.tobytes() for o in outs}) == N_MODES
    # each mode is a symmetry of the square: it preserves the multiset of values and is an involution or rotation
    assert np.array_equal(apply_mode(apply_mode(x, 1), 3), x)
    for m in range(4, 8):
        assert np.array_equal(apply_mode(apply_mode(x, m), m), x)


def test_paired_patch_applies_the_same_crop_and_mode(rng):
    gt = rng.random((30, 40))
    lq, out_gt = paired_patch(2 * gt, gt, np.random.default_rng(5), patch=8, augment=True)
    assert lq.shape == (8, 8) and np.array_equal(lq, 2 * out_gt)
    assert any(np.array_equal(apply_mode(gt[t : t + 8, l : l + 8], m), out_gt)
               for t in range(23) for l in range(33) for m in range(8))
    with pytest.raises(ValueError, match="larger"):
        paired_patch(gt, gt, rng, patch=31)


def test_split_counts_and_assignment():
    assert split_counts(100) == {"train": 80, "val": 10, "test": 10}
    assert split_counts(10) == {"train": 8, "val": 1, "test": 1}
    assert split_counts(5) == {"train": 3, "val": 1, "test": 1}
    names = [f"im{i:03d}" for i in range(50)]
    a = assign_splits(names, seed=3)
    assert a == assign_splits(list(reversed(names)), seed=3)  # order of the input does not matter
    assert a != assign_splits(names, seed=4)
    assert sorted(sum(a.values(), [])) == names
    assert [len(a[s]) for s in ("train", "val", "test")] == [40, 5, 5]


def test_paired_folder_yields_matching_tensors(tmp_path):
    make_split(tmp_path, ["b", "a", "c"])
    ds = PairedFolder(tmp_path, "train")
    assert ds.names == ["a", "b", "c"] and len(ds) == 3
    lq, gt = ds[1]
    assert lq.dtype == torch.float32 and lq.shape == (1, 20, 24)
    assert torch.equal(lq, gt / 2)


def test_crops_depend_on_seed_epoch_and_index_only(tmp_path):
    make_split(tmp_path, ["a", "b"])
    ds = PairedFolder(tmp_path, "train", patch=8, augment=True, seed=7)
    first = ds[0][1]
    ds[1], ds[0]  # other calls in between change nothing
    assert torch.equal(ds[0][1], first)
    ds.set_epoch(1)
    assert not torch.equal(ds[0][1], first)
    again = PairedFolder(tmp_path, "train", patch=8, augment=True, seed=7)  # a resumed process
    assert torch.equal(again[0][1], first)
    lq, gt = ds[0]
    assert lq.shape == (1, 8, 8) and torch.equal(lq, gt / 2)


def test_paired_folder_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="val"):
        PairedFolder(make_split(tmp_path, ["a"]), "val")
    (tmp_path / "val" / "lq").mkdir(parents=True)
    (tmp_path / "val" / "gt").mkdir(parents=True)
    with pytest.raises(ValueError, match="no images"):
        PairedFolder(tmp_path, "val")
    make_split(tmp_path, ["x", "y"], split="test")
    (tmp_path / "test" / "gt" / "y.npy").unlink()
    with pytest.raises(ValueError, match=r"unmatched.*\['y'\]"):
        PairedFolder(tmp_path, "test")
    write_image(tmp_path / "train" / "lq" / "z.npy", np.zeros((20, 24)))
    write_image(tmp_path / "train" / "gt" / "z.npy", np.zeros((20, 25)))
    ds = PairedFolder(tmp_path, "train")
    with pytest.raises(ValueError, match="z.npy"):
        ds[ds.names.index("z")]
    with pytest.raises(ValueError, match="larger than .*a.npy"):
        PairedFolder(tmp_path, "train", patch=21)[0]
