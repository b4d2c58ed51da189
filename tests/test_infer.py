import numpy as np
import pytest
import torch
from torch import nn

from mpimamba import infer
from mpimamba import pretrained
from mpimamba.infer import edge_window, restore
from mpimamba.models import Restorer


class SmallConv(Restorer):
    """Three 3x3 convolutions: receptive-field radius 3 pixels."""

    def __init__(self, width=4):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.GELU(), nn.Conv2d(width, width, 3, padding=1),
                                 nn.GELU(), nn.Conv2d(width, 1, 3, padding=1))
        self.largest_input = (0, 0)

    def restore(self, x):
        self.largest_input = max(self.largest_input, tuple(x.shape[-2:]))
        return x + self.net(x)


@pytest.mark.parametrize("shape,tile,overlap", [((100, 130), 48, 16), ((77, 200), 64, 32), ((50, 300), 64, 13)])
def test_tiled_equals_whole_image(rng, shape, tile, overlap):
    model = SmallConv().eval()
    image = rng.random(shape).astype(np.float32)
    whole = model(torch.from_numpy(image)[None, None])[0, 0].detach().numpy()
    model.largest_input = (0, 0)
    tiled = restore(model, image, tile=tile, overlap=overlap, batch_size=3)
    assert model.largest_input[0] <= tile and model.largest_input[1] <= tile
    assert tiled.dtype == np.float32 and tiled.shape == shape
    assert np.abs(tiled - whole).max() < 1e-4
    # a receptive field wider than the zero band: seams appear, so the test above is not vacuous
    blurry = restore(model, image, tile=tile, overlap=4)
    assert np.abs(blurry - whole).max() > 1e-4


def test_flip_average_is_the_mean_over_mirror_images(rng):
    """The averaged restoration is the mean of the plain restorations of the four mirror images, each
    mirrored back, and so commutes with mirroring, which the network alone does not."""
    torch.manual_seed(1)
    model = SmallConv().eval()
    image = rng.random((40, 56)).astype(np.float32)
    plain = infer.Restoration(model, nonnegative=False)
    averaged = infer.Restoration(model, nonnegative=False, flip_average=True)
    mirrored_back = [np.flip(plain(np.ascontiguousarray(np.flip(image, axes))), axes)
                     for axes in ((), (0,), (1,), (0, 1))]
    np.testing.assert_allclose(averaged(image), np.mean(mirrored_back, axis=0), atol=1e-6)
    for axes in ((0,), (1,), (0, 1)):
        mirrored = np.ascontiguousarray(np.flip(image, axes))
        assert np.abs(np.flip(plain(mirrored), axes) - plain(image)).max() > 1e-3  # not vacuous
        np.testing.assert_allclose(np.flip(averaged(mirrored), axes), averaged(image), atol=1e-5)
    # in tiles too (each mirror image is cut into its own tiles)
    tiled = infer.Restoration(model, nonnegative=False, flip_average=True, tile=32, overlap=8)
    np.testing.assert_allclose(np.flip(tiled(np.ascontiguousarray(np.flip(image, 1))), 1), tiled(image), atol=1e-5)


def test_window_weights_cover_and_vanish_at_cuts():
    w = edge_window(64, 32, at_start=False, at_end=True)
    assert np.all(w[:8] == 0) and np.all(w[32:] == 1) and np.all(np.diff(w[:32]) >= 0)
    assert np.all(edge_window(64, 32, True, True) == 1)


def test_large_image_runs_in_tiles(rng):
    model = SmallConv(width=1)
    image = rng.random((2048, 2048), dtype=np.float32)
    out = restore(model, image)  # tile=None: automatic tiling above 512 pixels per side
    assert out.shape == (2048, 2048) and np.all(np.isfinite(out))
    assert model.largest_input == (infer.AUTO_TILE, infer.AUTO_TILE)
    assert model.training  # restore ran in eval mode and gave the mode back


def test_bad_inputs(rng):
    model = SmallConv()
    with pytest.raises(ValueError, match="NaN"):
        restore(model, np.full((8, 8), np.nan))
    with pytest.raises(ValueError, match="H, W"):
        restore(model, np.zeros((2, 8, 8)))
    with pytest.raises(ValueError, match="overlap"):
        restore(model, np.zeros((80, 80)), tile=32, overlap=32)


def test_shipped_model_path_explains_when_missing(monkeypatch, tmp_path):
    monkeypatch.setattr(pretrained, "MODEL_PATH", tmp_path / "mpi_mamba_small.safetensors")
    with pytest.raises(FileNotFoundError, match="--model"):
        pretrained.model_path()


def test_pretrained_install_copies_weights_and_records_training(monkeypatch, tmp_path):
    """The recipe's install step: weights copied byte for byte, the JSON gains the training record, and the
    installed model loads as the shipped one."""
    from mpimamba.models import build, save_model

    run = tmp_path / "run"
    save_model(build("nafnet", "tiny"), run / "model", extra={"seed": 7})
    monkeypatch.setattr(pretrained, "WEIGHTS_DIR", tmp_path / "weights")
    monkeypatch.setattr(pretrained, "MODEL_PATH", tmp_path / "weights" / "shipped.safetensors")
    installed = pretrained.install(run, {"recipe": "x", "steps": 3})
    assert installed.read_bytes() == (run / "model.safetensors").read_bytes()
    import json

    meta = json.loads(installed.with_suffix(".json").read_text())
    assert meta["training"] == {"recipe": "x", "steps": 3} and meta["seed"] == 7
    assert pretrained.load().__class__.__name__ == build("nafnet", "tiny").__class__.__name__
    assert not list((tmp_path / "weights").glob(".*"))  # no temp files left behind
