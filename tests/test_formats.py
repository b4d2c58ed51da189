"""Outputs give back what the user gave (issue 14, item 4): dtype and range, metadata, 3-D stacks."""

from pathlib import Path

import h5py
import numpy as np
import pytest
import tifffile
from PIL import Image

from mpimamba import calibrate as calibrate_module
from mpimamba.calibrate import calibrate
from mpimamba.cli import main
from mpimamba.data.io import (MDF_HEADER_GROUPS, read_image, read_image_with_info, read_mdf_headers,
                              write_image, write_image_with_info)
from mpimamba.infer import Restoration
from mpimamba.models import build, load_model, save_model

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "mdf"  # ../shared beside the clone


def fixture(name: str) -> Path:
    path = FIXTURES / name
    if not path.is_file():
        pytest.skip(f"MDF fixture {path} absent (it lives in ../shared/fixtures/mdf beside the repository)")
    return path


@pytest.fixture
def model_path(tmp_path):
    return save_model(build("nafnet", "tiny"), tmp_path / "m" / "model")


class Scaling:
    """Stands in for `Restoration`: multiplies by `factor`, so that what calibrate writes is known exactly."""

    factor = 1.0

    def __init__(self, model, **options):
        pass

    def __call__(self, image, name="image"):
        assert image.ndim == 2, name
        return image * np.float32(self.factor)


@pytest.fixture
def scaling(monkeypatch):
    monkeypatch.setattr(calibrate_module, "Restoration", Scaling)
    monkeypatch.setattr(Scaling, "factor", 1.0)
    return Scaling


def write_stored(path: Path, stored: np.ndarray) -> Path:
    """An integer image as another program would write it (not through mpimamba)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".png":
        Image.fromarray(stored).save(path)
    else:
        tifffile.imwrite(path, stored)
    return path


def stored_pixels(path: Path) -> np.ndarray:
    if path.suffix == ".png":
        with Image.open(path) as img:
            return np.asarray(img)
    return tifffile.imread(path)


INTEGER_CASES = [(".png", np.uint8), (".png", np.uint16), (".tif", np.uint8), (".tif", np.uint16)]


# ---------------------------------------------------------------------------------------------- dtype and range
@pytest.mark.parametrize("suffix,dtype", INTEGER_CASES)
def test_integer_images_round_trip_with_dtype_and_range(tmp_path, rng, suffix, dtype):
    top = np.iinfo(dtype).max
    stored = rng.integers(0, top + 1, (19, 23)).astype(dtype)
    stored[0, 0] = top
    values, info = read_image_with_info(write_stored(tmp_path / f"in{suffix}", stored))
    assert values.dtype == np.float32 and values.max() == 1.0  # read in [0, 1] by the dtype's max
    written = write_image_with_info(tmp_path / f"out{suffix}", values, info)
    back = stored_pixels(written.path)
    assert back.dtype == dtype and np.array_equal(back, stored) and written.clipped == 0


@pytest.mark.parametrize("suffix,dtype", INTEGER_CASES)
def test_calibrate_gives_back_the_dtype_and_reports_clipping(tmp_path, rng, model_path, scaling, capsys,
                                                             suffix, dtype):
    top = np.iinfo(dtype).max
    stored = rng.integers(0, top + 1, (16, 20)).astype(dtype)
    src = write_stored(tmp_path / "in" / f"a{suffix}", stored)
    common = ["--model", str(model_path), "--device", "cpu"]
    assert main(["calibrate", str(src), "-o", str(tmp_path / "same"), *common]) == 0
    back = stored_pixels(tmp_path / "same" / src.name)
    assert back.dtype == dtype and np.array_equal(back, stored)  # an identity restoration changes nothing

    scaling.factor = 2.0  # restored values beyond what the dtype holds are clipped, and counted
    written = calibrate([src], tmp_path / "double", model_path=model_path, device="cpu")
    expected = np.rint(stored.astype(np.float64) * 2)
    assert written[0].clipped == np.count_nonzero(expected > top) > 0
    assert np.array_equal(stored_pixels(written[0].path), np.minimum(expected, top).astype(dtype))
    err = capsys.readouterr().err
    assert f"{written[0].path}: clipped {written[0].clipped} pixel(s)" in err


def test_float_tiff_stays_float32_and_float64_npy_stays_float64(tmp_path, rng):
    image = rng.random((9, 11)).astype(np.float32)
    tifffile.imwrite(tmp_path / "f.tif", image)
    values, info = read_image_with_info(tmp_path / "f.tif")
    written = write_image_with_info(tmp_path / "g.tif", values * 3, info)
    assert tifffile.imread(written.path).dtype == np.float32
    assert np.array_equal(tifffile.imread(written.path), image * 3)
    np.save(tmp_path / "d.npy", image.astype(np.float64))
    values, info = read_image_with_info(tmp_path / "d.npy")
    assert np.load(write_image_with_info(tmp_path / "e.npy", values, info).path).dtype == np.float64


def test_an_info_of_another_format_is_not_applied(tmp_path, rng):
    stored = rng.integers(0, 65536, (8, 8)).astype(np.uint16)
    values, info = read_image_with_info(write_stored(tmp_path / "a.tif", stored))
    written = write_image_with_info(tmp_path / "a.npy", values, info)  # NPY keeps values: float32 as read
    assert np.array_equal(np.load(written.path), values)


def test_tiff_keeps_its_resolution_and_imagej_spacing(tmp_path, rng):
    stored = rng.integers(0, 256, (3, 6, 7)).astype(np.uint8)
    tifffile.imwrite(tmp_path / "s.tif", stored, imagej=True, resolution=(4.0, 2.0),
                     metadata={"spacing": 0.5, "unit": "mm", "axes": "ZYX"})
    values, info = read_image_with_info(tmp_path / "s.tif")
    written = write_image_with_info(tmp_path / "t.tif", values, info)
    with tifffile.TiffFile(written.path) as tif:
        assert tif.pages.first.tags["XResolution"].value == (4, 1)
        assert tif.pages.first.tags["YResolution"].value == (2, 1)
        assert tif.imagej_metadata["spacing"] == 0.5 and tif.imagej_metadata["unit"] == "mm"
        assert tif.series[0].axes == "ZYX" and np.array_equal(tif.asarray(), stored)


# ---------------------------------------------------------------------------------------------- MDF
def mdf_fields(path: Path) -> dict:
    """Every dataset and attribute of an HDF5 file: name -> (HDF5 type, shape, value)."""
    found = {}
    with h5py.File(path, "r") as f:
        def visit(name, item):
            for key in item.attrs:
                found[f"{name}@{key}"] = (item.attrs.get_id(key).get_type().dtype, None, item.attrs[key])
            if isinstance(item, h5py.Dataset):
                tid = item.id.get_type()
                string = isinstance(tid, h5py.h5t.TypeStringID)
                kind = (tid.dtype, tid.get_cset(), tid.get_strpad()) if string else tid.dtype
                found[name] = (kind, item.shape, item[()] if name != "reconstruction/data" else None)

        visit("/", f)
        f.visititems(visit)
    return found


def assert_same(kept: dict, fields: dict, names) -> None:
    for name in names:
        assert name in fields, name
        (ktype, kshape, kvalue), (ftype, fshape, fvalue) = kept[name], fields[name]
        assert ktype == ftype and kshape == fshape, name
        assert np.array_equal(np.asarray(kvalue), np.asarray(fvalue)), name


def assert_headers_kept(source: Path, output: Path, *, new_identity: bool = True) -> dict:
    """Every root field and header-group field of `source` is in `output` with its type and value; the
    root uuid and time are new (they identify the file), in the same type."""
    kept, fields = mdf_fields(source), mdf_fields(output)
    header = [n for n in kept if n.split("/")[0] in MDF_HEADER_GROUPS or "/" not in n.strip("/")]
    assert {"version", "uuid", "time", "study/name", "scanner/name"} <= set(header)
    same = [n for n in header if n not in ("uuid", "time")] if new_identity else header
    assert_same(kept, fields, same)
    for name in ("uuid", "time"):
        assert fields[name][:2] == kept[name][:2] and fields[name][2] != kept[name][2]
        assert len(fields[name][2]) == len(kept[name][2])  # all 36 characters, not 35
    return fields


def make_mdf(path: Path, volume: np.ndarray) -> Path:
    """An MDF reconstruction of `volume` (frames, z, y, x), with typed header fields as MDF tools write them."""
    q, nz, ny, nx = volume.shape
    p = nx * ny * nz
    with h5py.File(path, "w") as f:
        f.attrs["note"] = np.int32(7)
        f["version"] = np.bytes_("2.0.1")
        f["uuid"] = np.bytes_("9b7c0d4e-1f2a-4b3c-8d5e-6f7a8b9c0d1e")
        f["time"] = np.bytes_("2024-01-02T03:04:05.678")
        f["study/name"] = np.bytes_("phantoms")
        f["study/number"] = np.int64(3)
        f["study/uuid"] = "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"  # variable-length UTF-8
        f["experiment/isSimulation"] = np.int8(0)
        f["experiment/name"] = np.bytes_("spiral")
        f["scanner/name"] = np.bytes_("preclinical")
        f["scanner/boreSize"] = 0.12
        f["acquisition/numFrames"] = np.int64(q)
        f["acquisition/drivefield/waveform"] = np.array([[b"sine"]], dtype=h5py.string_dtype("ascii"))
        f["acquisition/drivefield/strength"] = np.full((1, 1, 2), 0.014)
        f["acquisition/gradient"] = np.array([[[[-1.0, -1.0, 2.0]]]])
        f["tracer/name"] = np.array([b"perimag"], dtype=h5py.string_dtype("ascii"))
        f["tracer/concentration"] = np.array([0.5])
        f["reconstruction/data"] = volume.reshape(q, p, 1)
        f["reconstruction/size"] = np.array([nx, ny, nz], dtype=np.int64)
        f["reconstruction/fieldOfView"] = np.array([0.02, 0.016, 0.012])
        f["reconstruction/fieldOfViewCenter"] = np.array([0.0, 0.001, -0.002])
        f["reconstruction/order"] = np.bytes_("xyz")
        f["reconstruction/isOverscanRegion"] = np.zeros(p, dtype=np.int8)
        f["measurement/data"] = np.zeros((q, 1, 1, 8), np.float32)  # raw data: not an image, not kept
    return path


@pytest.fixture
def synthetic_mdf(tmp_path, rng):
    """One frame of a 5 x 4 x 3 (x y z) volume."""
    volume = rng.random((1, 3, 4, 5)).astype(np.float32)
    return make_mdf(tmp_path / "recon.mdf", volume), volume[0]


def test_mdf_volume_is_read_in_its_layout(synthetic_mdf):
    path, volume = synthetic_mdf
    values, info = read_image_with_info(path)
    assert info.shape == (1, 3, 4, 5, 1) and np.array_equal(values, volume)  # (frames, z, y, x, channels)
    with pytest.raises(ValueError, match="recon.mdf.*3-D stack"):
        read_image(path)


def test_mdf_output_keeps_every_header_field_with_its_type(tmp_path, synthetic_mdf):
    path, volume = synthetic_mdf
    values, info = read_image_with_info(path)
    out = write_image_with_info(tmp_path / "out.mdf", 2 * values, info).path
    fields = assert_headers_kept(path, out)
    assert fields["/@note"][:1] == (np.dtype(np.int32),) and fields["/@note"][2] == 7  # root attributes too
    grid = [n for n in mdf_fields(path) if n.startswith("reconstruction/") and n != "reconstruction/data"]
    assert_same(mdf_fields(path), fields, grid)  # size, field of view and centre, order, overscan mask
    assert fields["reconstruction/data"][:2] == (np.dtype(np.float32), (1, 60, 1))
    assert not any(n.startswith("measurement") for n in fields)
    assert np.array_equal(read_image_with_info(out)[0], 2 * volume)


def test_header_template_fixture_gives_its_headers_to_a_new_reconstruction(tmp_path, rng):
    template = fixture("header-template.mdf")
    image = rng.random((6, 9)).astype(np.float32)
    out = write_image(tmp_path / "new.mdf", image, info=read_mdf_headers(template, voxel_size=(1e-3, 1e-3, 2e-3)))
    fields = assert_headers_kept(template, out)
    assert fields["version"][2] == b"2.1.0"
    assert fields["acquisition/drivefield/waveform"][1] == (1, 1)  # a variable-length (1, 1) string array
    assert fields["experiment/isSimulation"][0] == np.dtype(np.int8)
    assert list(fields["reconstruction/size"][2]) == [9, 1, 6]  # x, y, z
    assert fields["reconstruction/size"][0] == np.dtype(np.int64)
    assert np.allclose(fields["reconstruction/fieldOfView"][2], [9e-3, 1e-3, 12e-3])
    assert fields["reconstruction/fieldOfViewCenter"][0] == np.dtype(np.float64)
    assert fields["reconstruction/data"][1] == (1, 54, 1)
    assert np.array_equal(read_image(out), image)


def test_measurement_fixture_headers_are_kept_but_not_its_raw_data(tmp_path, rng):
    source = fixture("measurement-calibration.mdf")
    out = write_image(tmp_path / "new.mdf", rng.random((4, 4)), info=read_mdf_headers(source))
    fields = assert_headers_kept(source, out)
    assert "tracer/injectionTime" in fields and "reconstruction/data" in fields
    assert not any(n.startswith(("measurement", "calibration")) for n in fields)


def test_fixtures_without_a_reconstruction_say_what_they_hold():
    with pytest.raises(ValueError, match=r"measurement-calibration\.mdf: .*raw measurement data.*calibration"):
        read_image(fixture("measurement-calibration.mdf"))
    with pytest.raises(ValueError, match=r"header-template\.mdf: .*headers only.*/study.*no /reconstruction/data"):
        read_image_with_info(fixture("header-template.mdf"))


def test_an_hdf5_file_that_is_not_mdf_says_so(tmp_path):
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["images/a"] = np.zeros((3, 3))
    with pytest.raises(ValueError, match=r"other\.h5: not MPI Data Format.*/images"):
        read_image(tmp_path / "other.h5")
    with pytest.raises(ValueError, match=r"other\.h5: not an MDF file"):
        read_mdf_headers(tmp_path / "other.h5")


# ---------------------------------------------------------------------------------------------- DICOM
def dicom_file(path: Path, stored: np.ndarray):
    pydicom = pytest.importorskip("pydicom")
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    ds = pydicom.Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID, ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid(), generate_uid()
    ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    ds.PatientName, ds.PatientID, ds.StudyDate, ds.StudyDescription = "Doe^Jane", "P-0042", "20240102", "MPI study"
    ds.Modality, ds.PixelSpacing, ds.ImageType = "OT", [0.25, 0.5], ["ORIGINAL", "PRIMARY"]
    ds.RescaleSlope, ds.RescaleIntercept = 2, -100
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = stored.astype("<u2").tobytes()
    ds.save_as(path, enforce_file_format=True)
    return ds


def test_dicom_keeps_patient_study_and_spacing_tags(tmp_path, rng):
    stored = rng.integers(0, 4096, (10, 12)).astype(np.uint16)
    original = dicom_file(tmp_path / "in.dcm", stored)
    import pydicom

    values, info = read_image_with_info(tmp_path / "in.dcm")
    assert np.array_equal(values, stored * 2.0 - 100)  # RescaleSlope/Intercept applied
    written = write_image_with_info(tmp_path / "out.dcm", values + 4000, info)  # 12 bits hold up to 4095
    out = pydicom.dcmread(written.path)
    for keyword in ("PatientName", "PatientID", "StudyDate", "StudyDescription", "StudyInstanceUID",
                    "PixelSpacing", "Modality", "RescaleSlope", "RescaleIntercept", "BitsStored"):
        assert out[keyword].value == original[keyword].value, keyword
    assert out.SOPInstanceUID != original.SOPInstanceUID and out.SeriesInstanceUID != original.SeriesInstanceUID
    assert out.file_meta.MediaStorageSOPInstanceUID == out.SOPInstanceUID
    assert list(out.ImageType)[0] == "DERIVED"
    expected = np.rint((values + 4000 + 100) / 2.0)
    assert out.pixel_array.dtype == np.uint16
    assert np.array_equal(out.pixel_array, np.minimum(expected, 4095))
    assert written.clipped == np.count_nonzero(expected > 4095) > 0
    # two slices of one series stay one (new) series
    again = write_image_with_info(tmp_path / "again.dcm", values, info)
    assert pydicom.dcmread(again.path).SeriesInstanceUID == out.SeriesInstanceUID


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small_bigendian.dcm", "MR_small_implicit.dcm"])
def test_dicom_files_of_other_encodings_come_back_with_their_tags(tmp_path, name):
    pydicom = pytest.importorskip("pydicom")
    from pydicom.data import get_testdata_file

    source = get_testdata_file(name, download=False)  # pydicom's own test files, never downloaded
    if source is None:
        pytest.skip(f"pydicom's test file {name} is not installed")
    values, info = read_image_with_info(source)
    out = pydicom.dcmread(write_image_with_info(tmp_path / "out.dcm", values, info).path)
    original = pydicom.dcmread(source)
    for keyword in ("PatientName", "PatientID", "StudyInstanceUID", "PixelSpacing", "StudyDate"):
        assert out.get(keyword) == original.get(keyword), keyword
    assert np.array_equal(out.pixel_array, original.pixel_array)
    assert out.pixel_array.dtype == original.pixel_array.dtype.newbyteorder("=")  # same type, little endian


# ---------------------------------------------------------------------------------------------- 3-D stacks
def expected_slices(model_path, stack, axis):
    restoration = Restoration(load_model(model_path), tile=32, overlap=8)
    return np.stack([restoration(np.take(stack, i, axis=axis)) for i in range(stack.shape[axis])], axis=axis)


@pytest.mark.parametrize("axis", [0, 2])
def test_stacks_are_restored_slice_by_slice(tmp_path, rng, model_path, axis):
    stack = rng.random((3, 18, 20)).astype(np.float32)
    (tmp_path / "in").mkdir()
    np.save(tmp_path / "in" / "v.npy", stack)
    tifffile.imwrite(tmp_path / "in" / "s.tif", np.round(stack * 65535).astype(np.uint16), imagej=True)
    argv = ["calibrate", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--model", str(model_path),
            "--device", "cpu", "--tile", "32", "--overlap", "8", "--slice-axis", str(axis)]
    assert main(argv) == 0
    out = np.load(tmp_path / "out" / "v.npy")
    assert out.shape == stack.shape and out.dtype == np.float32
    assert np.array_equal(out, expected_slices(model_path, stack, axis))
    tiff = tifffile.imread(tmp_path / "out" / "s.tif")
    values = read_image_with_info(tmp_path / "in" / "s.tif")[0]
    expected = np.clip(np.rint(expected_slices(model_path, values, axis).astype(np.float64) * 65535), 0, 65535)
    assert tiff.shape == stack.shape and tiff.dtype == np.uint16
    assert np.abs(tiff.astype(np.int64) - expected).max() <= 1  # float32 products may round either way


@pytest.mark.parametrize("shape,axis", [((1, 3, 4, 5), 1), ((3, 1, 4, 5), 0)])  # a volume; frames of a plane
def test_mdf_stacks_are_restored_slice_by_slice_in_their_layout(tmp_path, rng, model_path, scaling, shape, axis):
    volume = rng.random(shape).astype(np.float32)
    path = make_mdf(tmp_path / "recon.mdf", volume)
    scaling.factor = 3.0
    written = calibrate([path], tmp_path / "out", model_path=model_path, device="cpu", slice_axis=axis)
    with h5py.File(written[0].path, "r") as f:
        q, p = shape[0], int(np.prod(shape[1:]))
        assert f["reconstruction/data"].shape == (q, p, 1)
        assert np.array_equal(f["reconstruction/data"][()], 3 * volume.reshape(q, p, 1))
        assert f["study/name"][()] == b"phantoms" and list(f["reconstruction/size"][()]) == [5, 4, shape[1]]


# ---------------------------------------------------------------------------------------------- bad input
def test_bad_input_names_the_file(tmp_path, rng):
    np.save(tmp_path / "four.npy", np.zeros((2, 3, 4, 5), np.float32))
    with pytest.raises(ValueError, match=r"four\.npy: expected a 2-D image or a 3-D stack"):
        read_image_with_info(tmp_path / "four.npy")
    tifffile.imwrite(tmp_path / "rgb.tif", rng.integers(0, 255, (6, 6, 3)).astype(np.uint8), photometric="rgb")
    with pytest.raises(ValueError, match=r"rgb\.tif: colour TIFF"):
        read_image_with_info(tmp_path / "rgb.tif")
    with pytest.raises(ValueError, match=r"s\.png: expected a 2-D image"):
        write_image(tmp_path / "s.png", np.zeros((2, 4, 4)))
    values, info = read_image_with_info(write_stored(tmp_path / "a.tif", np.zeros((4, 6), np.uint16)))
    with pytest.raises(ValueError, match=r"b\.tif: image of shape \(6, 4\) does not fit"):
        write_image_with_info(tmp_path / "b.tif", values.T, info)
    assert not (tmp_path / "b.tif").exists() and not (tmp_path / "s.png").exists()


def test_calibrate_refuses_a_bad_slice_axis(tmp_path, model_path):
    np.save(tmp_path / "v.npy", np.ones((2, 8, 8), np.float32))
    with pytest.raises(ValueError, match="slice-axis"):
        calibrate([tmp_path / "v.npy"], tmp_path / "o", model_path=model_path, slice_axis=3)
