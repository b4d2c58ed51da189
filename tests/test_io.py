import h5py
import numpy as np
import pytest

from mpimamba.data.io import SUFFIXES, read_image, write_image

FLOAT_SUFFIXES = [s for s in SUFFIXES if s not in (".png", ".dcm")]


@pytest.fixture
def image(rng):
    return rng.random((23, 37)).astype(np.float32)


@pytest.mark.parametrize("suffix", FLOAT_SUFFIXES)
def test_float_formats_round_trip_bit_exactly(tmp_path, image, suffix):
    path = write_image(tmp_path / f"a{suffix}", image)
    back = read_image(path)
    assert back.dtype == np.float32 and back.shape == image.shape
    assert np.array_equal(back, image)


@pytest.mark.parametrize("bits", [8, 16])
def test_png_round_trips_at_its_bit_depth(tmp_path, rng, bits):
    top = 2**bits - 1
    image = (rng.integers(0, top + 1, (19, 29)) / top).astype(np.float32)
    path = write_image(tmp_path / "a.png", image, png_bits=bits)
    assert np.array_equal(read_image(path), image)
    from PIL import Image

    with Image.open(path) as img:  # the file really holds the requested depth
        assert np.asarray(img).max() == round(image.max() * top)


def test_png_clips_with_a_warning(tmp_path):
    with pytest.warns(UserWarning, match=r"a.png: clipped 2 pixel\(s\)"):
        write_image(tmp_path / "a.png", np.array([[-0.5, 0.5], [1.5, 1.0]]))
    assert np.array_equal(read_image(tmp_path / "a.png"), np.float32([[0, 32768 / 65535], [1, 1]]))


def test_dicom_round_trip(tmp_path, image):
    pytest.importorskip("pydicom")
    assert np.array_equal(read_image(write_image(tmp_path / "a.dcm", image)), image)


def test_mdf_layout_follows_the_spec(tmp_path, image):
    path = write_image(tmp_path / "a.mdf", image)
    h, w = image.shape
    with h5py.File(path, "r") as f:
        data = f["reconstruction/data"][()]
        assert data.shape == (1, h * w, 1)  # frames x voxels x channels
        assert list(f["reconstruction/size"][()]) == [w, 1, h]  # x, y, z
        # voxel index = x + nx * (y + ny * z): x varies fastest
        assert data[0, 3 + w * 2, 0] == image[2, 3]


def test_singleton_axes_are_squeezed(tmp_path, image):
    np.save(tmp_path / "a.npy", image[None, :, :, None])
    assert np.array_equal(read_image(tmp_path / "a.npy"), image)


def test_refuses_to_overwrite(tmp_path, image):
    path = write_image(tmp_path / "a.tif", image)
    with pytest.raises(FileExistsError, match="a.tif"):
        write_image(path, image)
    write_image(path, 2 * image, overwrite=True)
    assert np.array_equal(read_image(path), 2 * image)


@pytest.mark.parametrize("suffix", [".tif", ".npy", ".npz", ".png", ".h5"])
def test_corrupt_file_names_it(tmp_path, suffix):
    path = tmp_path / f"broken{suffix}"
    path.write_bytes(b"this is not an image")
    with pytest.raises(ValueError, match=f"broken\\{suffix}"):
        read_image(path)


def test_nan_3d_and_unknown_suffix_name_the_file(tmp_path, image):
    bad = image.copy()
    bad[1, 1] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    with pytest.raises(ValueError, match="nan.npy.*NaN"):
        read_image(tmp_path / "nan.npy")
    with pytest.raises(ValueError, match="out.tif.*NaN"):
        write_image(tmp_path / "out.tif", bad)
    np.save(tmp_path / "cube.npy", np.zeros((3, 4, 5), np.float32))
    with pytest.raises(ValueError, match="cube.npy.*2-D"):
        read_image(tmp_path / "cube.npy")
    with pytest.raises(ValueError, match="a.jpg.*unknown"):
        read_image(tmp_path / "a.jpg")
    with pytest.raises(FileNotFoundError, match="missing.npy"):
        read_image(tmp_path / "missing.npy")
    assert not (tmp_path / "out.tif").exists()
