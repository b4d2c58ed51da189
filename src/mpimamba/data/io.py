"""Read and write single 2-D images; the format comes from the file suffix.

    .tif .tiff       float32 TIFF (ImageJ-compatible). Integer TIFFs are read scaled by their dtype's max.
    .npy             one array, values kept.
    .npz             one array, stored under the key "image"; a file with several arrays must have "image".
    .png             8- or 16-bit grayscale. Reading divides by the dtype's max (255 or 65535), giving [0, 1].
                     Writing expects [0, 1] (values outside are clipped, with a warning) and writes 16 bit
                     unless `png_bits=8`; a PNG round trip is exact at its bit depth, not for arbitrary floats.
    .h5 .hdf5 .mdf   MPI Data Format (MDF v2) reconstruction data: `/reconstruction/data` is a Q x P x S
                     array (frames x voxels x channels) and `/reconstruction/size` the voxel counts (x, y, z),
                     x varying fastest. A 2-D image (rows = z, columns = x) is one frame, one channel, y = 1.
    .dcm             DICOM, through the optional `pydicom` package (`pip install mpimamba[dicom]`);
                     RescaleSlope/Intercept are applied, values otherwise kept.

`read_image` always returns a float32 (H, W) array: singleton axes are squeezed away and anything that is
not then 2-D, not finite, or not readable raises an error that names the file. `write_image` writes
atomically and refuses to replace an existing file unless `overwrite=True`.
"""

from __future__ import annotations

import uuid
import warnings
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from ..fileutil import atomic_path

TIFF_SUFFIXES = (".tif", ".tiff")
HDF5_SUFFIXES = (".h5", ".hdf5", ".mdf")
SUFFIXES = (*TIFF_SUFFIXES, ".npy", ".npz", ".png", *HDF5_SUFFIXES, ".dcm")
NPZ_KEY = "image"
MDF_VERSION = "2.0.0"


def _suffix(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise ValueError(f"{path}: unknown image format {path.suffix!r}; expected one of {', '.join(SUFFIXES)}")
    return suffix


def _scale_integers(array: np.ndarray) -> np.ndarray:
    """Integer pixels -> [0, 1] by the dtype's max (computed in float64 so k/65535 rounds once)."""
    if array.dtype == bool:
        return array.astype(np.float64)
    if np.issubdtype(array.dtype, np.integer):
        return array.astype(np.float64) / np.iinfo(array.dtype).max
    return array


# ---------------------------------------------------------------------------------------------- readers
def _read_tiff(path: Path) -> np.ndarray:
    import tifffile

    return _scale_integers(tifffile.imread(path))


def _read_npy(path: Path) -> np.ndarray:
    return np.load(path, allow_pickle=False)


def _read_npz(path: Path) -> np.ndarray:
    with np.load(path, allow_pickle=False) as npz:
        keys = list(npz.keys())
        if len(keys) == 1:
            return npz[keys[0]]
        if NPZ_KEY in keys:
            return npz[NPZ_KEY]
        raise ValueError(f"{path}: holds arrays {keys}; expected one array or one named {NPZ_KEY!r}")


def _read_png(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as img:
        img.load()
        mode = img.mode
        array = np.asarray(img)
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        # PNG holds at most 16 bits per sample; Pillow may hand them over as int32 ("I")
        return array.astype(np.float64) / 65535.0
    if mode in ("L", "1"):
        return _scale_integers(array)
    if mode in ("LA", "RGB", "RGBA"):
        colour = array[..., :3] if mode != "LA" else array[..., :1]
        if not np.all(colour == colour[..., :1]):
            raise ValueError(f"{path}: colour PNG ({mode}) with differing channels; expected a grayscale image")
        return _scale_integers(colour[..., 0])
    raise ValueError(f"{path}: unsupported PNG mode {mode!r}; expected 8- or 16-bit grayscale")


def _read_mdf(path: Path) -> np.ndarray:
    import h5py

    with h5py.File(path, "r") as f:
        if "reconstruction/data" not in f:
            raise ValueError(f"{path}: no /reconstruction/data dataset (expected MDF reconstruction data)")
        data = f["reconstruction/data"][()]
        size = f["reconstruction/size"][()] if "reconstruction/size" in f else None
    if size is not None and data.ndim == 3:
        nx, ny, nz = (int(n) for n in np.ravel(size))
        q, p, s = data.shape
        if p != nx * ny * nz:
            raise ValueError(f"{path}: /reconstruction/data has {p} voxels but /reconstruction/size is {nx}x{ny}x{nz}")
        data = data.reshape(q, nz, ny, nx, s)  # x fastest -> C order (z, y, x)
    return data


def _read_dicom(path: Path) -> np.ndarray:
    pydicom = _import_pydicom(path)
    ds = pydicom.dcmread(path)
    array = ds.pixel_array.astype(np.float64)
    return array * float(getattr(ds, "RescaleSlope", 1.0)) + float(getattr(ds, "RescaleIntercept", 0.0))


def _import_pydicom(path: Path):
    try:
        import pydicom
    except ImportError as err:
        raise ImportError(f"{path}: DICOM needs the optional package pydicom (pip install 'mpimamba[dicom]')") from err
    return pydicom


_READERS = {
    **dict.fromkeys(TIFF_SUFFIXES, _read_tiff),
    ".npy": _read_npy,
    ".npz": _read_npz,
    ".png": _read_png,
    **dict.fromkeys(HDF5_SUFFIXES, _read_mdf),
    ".dcm": _read_dicom,
}


def _as_image(array, path: Path) -> np.ndarray:
    """Squeeze singleton axes and check the result is a finite real 2-D image; return float32."""
    array = np.asarray(array)
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == bool) or np.iscomplexobj(array):
        raise ValueError(f"{path}: expected a real-valued image, got dtype {array.dtype}")
    squeezed = np.squeeze(array)
    if squeezed.ndim != 2:
        raise ValueError(f"{path}: expected a 2-D image, got shape {array.shape} ({squeezed.ndim}-D after squeezing)")
    image = squeezed.astype(np.float32)
    if not np.all(np.isfinite(image)):
        raise ValueError(f"{path}: image contains NaN or infinite values")
    return image


def read_image(path: str | Path) -> np.ndarray:
    """Read one image file as float32 (H, W); see the module docstring for each format's scaling."""
    path = Path(path)
    reader = _READERS[_suffix(path)]
    if not path.is_file():
        raise FileNotFoundError(f"image file {path} not found")
    try:
        array = reader(path)
    except ImportError:
        raise
    except Exception as err:  # each library raises its own types for corrupt files
        if isinstance(err, ValueError) and str(path) in str(err):  # our own message already names the file
            raise
        raise ValueError(f"{path}: cannot read {path.suffix} file: {err}") from err
    return _as_image(array, path)


# ---------------------------------------------------------------------------------------------- writers
def _write_tiff(tmp: Path, image: np.ndarray, png_bits: int) -> None:
    import tifffile

    tifffile.imwrite(tmp, image, imagej=True)


def _write_npy(tmp: Path, image: np.ndarray, png_bits: int) -> None:
    with open(tmp, "wb") as f:  # a file object stops numpy appending ".npy" to the temporary name
        np.save(f, image)


def _write_npz(tmp: Path, image: np.ndarray, png_bits: int) -> None:
    with open(tmp, "wb") as f:
        np.savez_compressed(f, **{NPZ_KEY: image})


def _write_png(tmp: Path, image: np.ndarray, png_bits: int) -> None:
    from PIL import Image

    if png_bits not in (8, 16):
        raise ValueError(f"png_bits must be 8 or 16, got {png_bits}")
    if image.min() < 0 or image.max() > 1:
        warnings.warn(
            f"PNG stores [0, 1]; clipping values in [{image.min():.4g}, {image.max():.4g}]", stacklevel=3
        )
    top = 2**png_bits - 1
    dtype = np.uint8 if png_bits == 8 else np.uint16
    pixels = np.round(np.clip(image.astype(np.float64), 0.0, 1.0) * top).astype(dtype)
    Image.fromarray(pixels).save(tmp, format="PNG")


def _write_mdf(tmp: Path, image: np.ndarray, png_bits: int) -> None:
    import h5py

    h, w = image.shape
    with h5py.File(tmp, "w") as f:
        # the root metadata MDF requires; the image itself is one frame, one channel, y = 1
        f["version"] = MDF_VERSION
        f["uuid"] = str(uuid.uuid4())
        f["time"] = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]
        f["reconstruction/data"] = image.reshape(1, h * w, 1)  # (Q, P, S), x fastest within each z row
        f["reconstruction/size"] = np.array([w, 1, h], dtype=np.int64)  # (x, y, z)
        f["reconstruction/order"] = "xyz"


def _write_dicom(tmp: Path, image: np.ndarray, png_bits: int) -> None:
    pydicom = _import_pydicom(tmp)
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    # secondary capture with float pixel data (7FE0,0008) keeps float32 values bit-exact
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "OT"
    ds.Rows, ds.Columns = image.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 32
    ds.FloatPixelData = np.ascontiguousarray(image, dtype="<f4").tobytes()
    ds.save_as(tmp, enforce_file_format=True)


_WRITERS = {
    **dict.fromkeys(TIFF_SUFFIXES, _write_tiff),
    ".npy": _write_npy,
    ".npz": _write_npz,
    ".png": _write_png,
    **dict.fromkeys(HDF5_SUFFIXES, _write_mdf),
    ".dcm": _write_dicom,
}


def write_image(path: str | Path, array, overwrite: bool = False, *, png_bits: int = 16) -> Path:
    """Write a 2-D image as float32 (PNG: quantised to `png_bits`); atomic; never replaces a file unless asked."""
    path = Path(path)
    writer = _WRITERS[_suffix(path)]
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True (--overwrite) to replace it")
    image = _as_image(array, path)
    with atomic_path(path) as tmp:
        writer(tmp, image, png_bits)
    return path
