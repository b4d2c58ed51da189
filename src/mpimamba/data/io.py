"""Read and write images; the format comes from the file suffix, and outputs give back what the user gave.

    .tif .tiff       TIFF, one page or a multi-page stack; grayscale. Integer TIFFs are read scaled by their
                     dtype's max (uint16 65535 -> 1.0); floats are kept.
    .npy             one array, values kept.
    .npz             one array, stored under the key "image"; a file with several arrays must have "image".
    .png             8- or 16-bit grayscale, 2-D only. Reading divides by the dtype's max (255 or 65535),
                     giving [0, 1]; a PNG round trip is exact at its bit depth, not for arbitrary floats.
    .h5 .hdf5 .mdf   MPI Data Format (MDF v2) reconstruction data: `/reconstruction/data` is a Q x P x S
                     array (frames x voxels x channels) and `/reconstruction/size` the voxel counts (x, y, z),
                     x varying fastest; read as (frames, z, y, x, channels), so a plane, a volume or frames
                     of a plane are 2-D or 3-D after squeezing. A new 2-D image (rows = z, columns = x) is
                     one frame, one channel, y = 1. Files without /reconstruction/data (raw measurements,
                     system matrices, headers only) are refused with a message that says what they hold.
    .dcm             DICOM, 2-D only, through the optional `pydicom` package (`pip install mpimamba[dicom]`);
                     RescaleSlope/Intercept are applied, values otherwise kept.

Two ways in. `read_image(path)` returns a float32 (H, W) array, what training and evaluation need.
`read_image_with_info(path)` also takes 3-D stacks and volumes (TIFF, NPY/NPZ, MDF) and returns, beside the
float32 values, an `ImageInfo`: how the file stored them (dtype, scale, shape) and its metadata.
`write_image_with_info(path, values, info)` turns values in the read scale back into exactly that: the same
dtype (integers rounded, and clipped to what the dtype or DICOM's BitsStored holds, the clipped pixels
counted), the same shape, and the metadata: TIFF resolution and ImageJ spacing, the NPZ key, MDF root fields
and header groups with their HDF5 types, the DICOM dataset with its patient, study and spacing tags. So
`read -> restore -> write` gives a uint16 TIFF back as uint16 and an 8-bit PNG as 8-bit. An `ImageInfo` of
another format is not applied (each format has its own scale), the output format's defaults are.
An MDF output keeps its input's `/reconstruction` grid (size, fieldOfView, fieldOfViewCenter, order, ...);
only the root `uuid` and `time`, which identify the file itself, are new. `read_mdf_headers(template)` gives
a new image the headers of any MDF file; its fieldOfView comes from `voxel_size`, or is left out (optional
in MDF v2) when nothing says how large a voxel is.

Singleton axes are squeezed away; anything that is then not 2-D (or, with info, 3-D), not finite, or not
readable raises an error that names the file. Writers write atomically and refuse to replace an existing
file unless `overwrite=True`.
"""

from __future__ import annotations

import copy
import io
import uuid
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from ..fileutil import atomic_path

TIFF_SUFFIXES = (".tif", ".tiff")
HDF5_SUFFIXES = (".h5", ".hdf5", ".mdf")
SUFFIXES = (*TIFF_SUFFIXES, ".npy", ".npz", ".png", *HDF5_SUFFIXES, ".dcm")
NPZ_KEY = "image"
MDF_VERSION = "2.0.0"
# the MDF groups that describe where an image came from (MDF v2: /tracer only when a tracer was used)
MDF_HEADER_GROUPS = ("study", "experiment", "scanner", "acquisition", "tracer")
FORMATS = {**dict.fromkeys(TIFF_SUFFIXES, "tiff"), ".npy": "numpy", ".npz": "numpy", ".png": "png",
           **dict.fromkeys(HDF5_SUFFIXES, "mdf"), ".dcm": "dicom"}
STACK_FORMATS = ("tiff", "numpy", "mdf")  # formats that hold 3-D stacks and volumes
IMAGEJ_DTYPES = (np.uint8, np.uint16, np.float32)  # what an ImageJ TIFF can hold


def _suffix(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise ValueError(f"{path}: unknown image format {path.suffix!r}; expected one of {', '.join(SUFFIXES)}")
    return suffix


# ---------------------------------------------------------------------------------------------- records
@dataclass(frozen=True)
class MDFHeaders:
    """An MDF file's metadata: its root fields, header groups and /reconstruction grid (all but the data).

    Kept as the bytes of a small in-memory HDF5 file, because h5py's copy carries each field's exact HDF5
    type (fixed or variable-length string, int8 flags, scalar or (1, 1) shapes) and attributes, which a
    round trip through numpy values would not; the bytes keep the record a plain value, independent of the
    source file. `voxel_size` (metres, x y z) gives `/reconstruction/fieldOfView` where the headers have none.
    """

    snapshot: bytes
    voxel_size: tuple[float, float, float] | None = None

    def copy_into(self, target) -> None:
        """Copy every stored field and group into the open h5py file `target`."""
        import h5py

        with h5py.File(io.BytesIO(self.snapshot), "r") as snapshot:
            _copy_root_attributes(snapshot, target)
            for name in snapshot:
                snapshot.copy(snapshot[name], target, name)


@dataclass(frozen=True)
class ImageInfo:
    """How a file stored its image, so that a writer gives back what the user gave.

    Values as read are `stored * slope + intercept` (integer TIFF and PNG: slope 1/dtype max; DICOM: its
    RescaleSlope/Intercept). `stored_range` bounds the stored values where the dtype does not (DICOM
    BitsStored); `shape` is the stored shape before squeezing (None: the image's own). `metadata` depends
    on the format: TIFF imwrite keywords (resolution, ImageJ spacing), the NPZ key, `MDFHeaders`, or the
    pydicom Dataset without its pixels.
    """

    format: str
    dtype: np.dtype = np.dtype(np.float32)
    slope: float = 1.0
    intercept: float = 0.0
    stored_range: tuple[float, float] | None = None
    shape: tuple[int, ...] | None = None
    metadata: Any = None

    def value_range(self) -> tuple[float, float]:
        """The stored values this info can hold: `stored_range`, else the dtype's own limits."""
        if self.stored_range is not None:
            return self.stored_range
        if self.dtype == bool:
            return 0.0, 1.0
        limits = np.iinfo(self.dtype) if np.issubdtype(self.dtype, np.integer) else np.finfo(self.dtype)
        return float(limits.min), float(limits.max)

    def to_values(self, stored: np.ndarray) -> np.ndarray:
        """Stored pixels -> float32 values in the read scale (computed in float64: k/65535 rounds once)."""
        values = stored.astype(np.float64)
        if self.slope != 1.0 or self.intercept != 0.0:
            values = values * self.slope + self.intercept
        return values.astype(np.float32)

    def to_stored(self, values: np.ndarray) -> tuple[np.ndarray, int]:
        """Values in the read scale -> the stored dtype (integers rounded), clipped to `value_range`;
        also returns how many pixels were clipped."""
        stored = values.astype(np.float64)
        if self.slope != 1.0 or self.intercept != 0.0:
            stored = (stored - self.intercept) / self.slope
        if not np.issubdtype(self.dtype, np.floating):
            stored = np.rint(stored)
        low, high = self.value_range()
        clipped = int(np.count_nonzero((stored < low) | (stored > high)))
        return np.clip(stored, low, high).astype(self.dtype), clipped


class Written(NamedTuple):
    """A written file, how many of its pixels were clipped, and the `ImageInfo` it was written with."""

    path: Path
    clipped: int
    info: ImageInfo

    def clip_message(self) -> str:
        """One line naming the file, how many pixels were clipped, and the range they were clipped to."""
        low, high = self.info.value_range()
        scale, shift = self.info.slope, self.info.intercept
        return (f"{self.path}: clipped {self.clipped} pixel(s) to the range of {self.info.dtype} "
                f"[{low:g}, {high:g}] (values [{low * scale + shift:.4g}, {high * scale + shift:.4g}] as read)")


def _integer_scale(dtype: np.dtype) -> dict:
    """ImageInfo fields of an integer TIFF or PNG: read as [0, 1] by the dtype's max (bool is 0 or 1)."""
    return {"slope": 1.0 / np.iinfo(dtype).max} if np.issubdtype(dtype, np.integer) else {}


def _default_info(fmt: str, png_bits: int = 16) -> ImageInfo:
    """What a plain `write_image` writes: float32, PNG quantised to `png_bits` over [0, 1]."""
    if fmt != "png":
        return ImageInfo(fmt)
    if png_bits not in (8, 16):
        raise ValueError(f"png_bits must be 8 or 16, got {png_bits}")
    dtype = np.dtype(np.uint8 if png_bits == 8 else np.uint16)
    return ImageInfo(fmt, dtype, **_integer_scale(dtype))


# ---------------------------------------------------------------------------------------------- readers
# Each reader returns the stored array and the ImageInfo fields it knows besides dtype and shape.
def _read_tiff(path: Path) -> tuple[np.ndarray, dict]:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        page = tif.pages.first
        if page.samplesperpixel > 1:
            raise ValueError(f"{path}: colour TIFF ({page.samplesperpixel} samples per pixel); expected grayscale")
        stored = tif.asarray()
        metadata = _tiff_metadata(tif, page)
    return stored, {**_integer_scale(stored.dtype), "metadata": metadata}


def _tiff_metadata(tif, page) -> dict:
    """The pixel size a TIFF records (resolution tags, ImageJ spacing), as `tifffile.imwrite` keywords."""
    kept: dict = {}
    x, y = page.tags.get("XResolution"), page.tags.get("YResolution")
    if x is not None and y is not None:
        kept["resolution"] = (x.value, y.value)
        unit = page.tags.get("ResolutionUnit")
        if unit is not None:
            kept["resolutionunit"] = int(unit.value)
    imagej = {k: v for k, v in (tif.imagej_metadata or {}).items() if k in ("spacing", "unit")}
    axes = tif.series[0].axes
    if len(axes) > 2 and set(axes) <= set("TZCYXS"):  # what a stack's first axis is: slices, frames, channels
        imagej["axes"] = axes
    if imagej:
        kept["metadata"] = imagej
    return kept


def _read_npy(path: Path) -> tuple[np.ndarray, dict]:
    try:
        return np.load(path, allow_pickle=False), {}
    except ValueError as err:
        if "pickle" in str(err):  # numpy suggests loading it unsafely: never for a file someone sent
            raise ValueError(f"{path}: holds Python objects, not a numeric image array (mpimamba never "
                             "unpickles a file)") from err
        raise


def _read_npz(path: Path) -> tuple[np.ndarray, dict]:
    with np.load(path, allow_pickle=False) as npz:
        keys = list(npz.keys())
        key = keys[0] if len(keys) == 1 else NPZ_KEY if NPZ_KEY in keys else None
        if key is None:
            raise ValueError(f"{path}: holds arrays {keys}; expected one array or one named {NPZ_KEY!r}")
        return npz[key], {"metadata": key}


def _read_png(path: Path) -> tuple[np.ndarray, dict]:
    from PIL import Image

    with Image.open(path) as img:
        img.load()
        mode = img.mode
        array = np.asarray(img)
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        # PNG holds at most 16 bits per sample; Pillow may hand them over as int32 ("I")
        stored = array.astype(np.uint16)
    elif mode in ("L", "1"):
        stored = array
    elif mode in ("LA", "RGB", "RGBA"):
        colour = array[..., :3] if mode != "LA" else array[..., :1]
        if not np.all(colour == colour[..., :1]):
            raise ValueError(f"{path}: colour PNG ({mode}) with differing channels; expected a grayscale image")
        stored = colour[..., 0]
    else:
        raise ValueError(f"{path}: unsupported PNG mode {mode!r}; expected 8- or 16-bit grayscale")
    return stored, _integer_scale(stored.dtype)


def _read_mdf(path: Path) -> tuple[np.ndarray, dict]:
    import h5py

    with h5py.File(path, "r") as f:
        if "reconstruction/data" not in f:
            raise ValueError(f"{path}: {_mdf_without_image(f)}")
        data = f["reconstruction/data"][()]
        size = f["reconstruction/size"][()] if "reconstruction/size" in f else None
        headers = _mdf_headers(f)
    if data.ndim != 3:
        raise ValueError(f"{path}: /reconstruction/data has shape {data.shape}; MDF v2 stores frames x voxels x "
                         "channels (Q x P x S)")
    q, p, s = data.shape
    if s != 1:  # squeezed, the channel axis would pass for an image axis and be restored as one
        raise ValueError(f"{path}: /reconstruction/data has {s} channels (Q x P x S = {q} x {p} x {s}); "
                         "mpimamba restores one channel: write each channel to its own file")
    nx, ny, nz = (int(n) for n in np.ravel(size)) if size is not None else (p, 1, 1)  # no size: a line
    if p != nx * ny * nz:
        raise ValueError(f"{path}: /reconstruction/data has {p} voxels but /reconstruction/size is {nx}x{ny}x{nz}")
    return data.reshape(q, nz, ny, nx, s), {"metadata": headers}  # x fastest -> C order (z, y, x)


def _mdf_without_image(f) -> str:
    """Why an HDF5 file has no image to read, saying what it does hold (raw data, headers, or no MDF)."""
    if "version" not in f:
        return ("not MPI Data Format reconstruction data: no /version and no /reconstruction/data "
                f"(the file holds {', '.join('/' + k for k in f) or 'nothing'})")
    held = []
    if "measurement" in f:
        shapes = ", ".join(f"{k} {'x'.join(map(str, v.shape))}" for k, v in f["measurement"].items()
                           if k.startswith("data") and hasattr(v, "shape"))
        held.append(f"raw measurement data (/measurement{': ' + shapes if shapes else ''})")
    if "calibration" in f:
        held.append("system-calibration data (/calibration)")
    if held:
        return (f"MDF file of {' and '.join(held)}, not a reconstructed image (no /reconstruction/data); "
                "reconstruct an image from it first, e.g. with MPIReco.jl")
    headers = ", ".join(f"/{g}" for g in MDF_HEADER_GROUPS if g in f)
    return f"MDF file with headers only ({headers or 'root fields'}) and no data: no /reconstruction/data to restore"


def _mdf_headers(f, voxel_size=None) -> MDFHeaders:
    """The snapshot of `MDFHeaders`: root fields, header groups and /reconstruction without its data."""
    import h5py

    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as snapshot:
        _copy_root_attributes(f, snapshot)
        for name, item in f.items():
            if isinstance(item, h5py.Dataset) or name in MDF_HEADER_GROUPS:
                f.copy(item, snapshot, name)
        if "reconstruction" in f:
            grid = snapshot.create_group("reconstruction")
            for name, item in f["reconstruction"].items():
                if name != "data":
                    f.copy(item, grid, name)
    return MDFHeaders(buffer.getvalue(), voxel_size)


def _copy_root_attributes(source, target) -> None:
    """HDF5 attributes of the root group (MDF itself uses none), each with its own HDF5 type."""
    for name in source.attrs:
        target.attrs.create(name, source.attrs[name], dtype=source.attrs.get_id(name).dtype)


def _read_dicom(path: Path) -> tuple[np.ndarray, dict]:
    pydicom = _import_pydicom(path)
    ds = pydicom.dcmread(path)
    stored = ds.pixel_array
    if int(getattr(ds, "NumberOfFrames", 1) or 1) > 1 or int(getattr(ds, "SamplesPerPixel", 1)) > 1:
        raise ValueError(f"{path}: multi-frame or colour DICOM (shape {stored.shape}); expected one grayscale image")
    stored_range = None
    if np.issubdtype(stored.dtype, np.integer) and "BitsStored" in ds:
        bits, signed = int(ds.BitsStored), int(getattr(ds, "PixelRepresentation", 0)) == 1
        stored_range = (-(2.0 ** (bits - 1)), 2.0 ** (bits - 1) - 1) if signed else (0.0, 2.0**bits - 1)
    header = copy.deepcopy(ds)
    for keyword in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"):
        if keyword in header:
            delattr(header, keyword)
    slope, intercept = float(getattr(ds, "RescaleSlope", 1.0)), float(getattr(ds, "RescaleIntercept", 0.0))
    return stored, {"slope": slope, "intercept": intercept, "stored_range": stored_range, "metadata": header}


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


def _checked(array, path: Path, max_ndim: int) -> np.ndarray:
    """Squeeze singleton axes and check the result is a finite real image of 2 (to `max_ndim`) axes."""
    array = np.asarray(array)
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == bool) or np.iscomplexobj(array):
        raise ValueError(f"{path}: expected a real-valued image, got dtype {array.dtype}")
    squeezed = np.squeeze(array)
    if not 2 <= squeezed.ndim <= max_ndim:
        wanted = "a 2-D image" if max_ndim == 2 else "a 2-D image or a 3-D stack"
        raise ValueError(f"{path}: expected {wanted}, got shape {array.shape} ({squeezed.ndim}-D after squeezing)")
    if not np.all(np.isfinite(squeezed)):
        raise ValueError(f"{path}: image contains NaN or infinite values")
    return squeezed


# the first bytes of each format, to tell a mislabelled or corrupt file from one the reader cannot parse
_SIGNATURES = {"TIFF": (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"), "PNG": (b"\x89PNG\r\n\x1a\n",),
               "NPY": (b"\x93NUMPY",), "NPZ": (b"PK\x03\x04", b"PK\x05\x06"), "HDF5": (b"\x89HDF\r\n\x1a\n",)}
_SIGNATURE_OF = {**dict.fromkeys(TIFF_SUFFIXES, "TIFF"), ".png": "PNG", ".npy": "NPY", ".npz": "NPZ",
                 **dict.fromkeys(HDF5_SUFFIXES, "HDF5")}


def _check_signature(path: Path, suffix: str) -> None:
    """Refuse a file whose first bytes are not its suffix's format, saying what it is when we can tell."""
    wanted = _SIGNATURE_OF.get(suffix)
    if wanted is None:
        return  # DICOM: its reader says so itself
    with open(path, "rb") as f:
        head = f.read(8)
    if any(head.startswith(sig) for sig in _SIGNATURES[wanted]):
        return
    actual = next((name for name, sigs in _SIGNATURES.items() if any(head.startswith(sig) for sig in sigs)), None)
    if actual is not None:
        raise ValueError(f"{path}: the file holds {actual} data although it is named {path.suffix}; rename it "
                         "to the suffix of its format")
    raise ValueError(f"{path}: not a {wanted} file (it does not start with a {wanted} header): corrupt, or of "
                     "another format")


def read_image_with_info(path: str | Path) -> tuple[np.ndarray, ImageInfo]:
    """Read a 2-D image or a 3-D stack as float32 values (module docstring) and how the file stored them."""
    path = Path(path)
    suffix = _suffix(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file {path} not found")
    _check_signature(path, suffix)
    try:
        stored, fields = _READERS[suffix](path)
    except ImportError:
        raise
    except Exception as err:  # each library raises its own types for corrupt files
        if isinstance(err, ValueError) and str(path) in str(err):  # our own message already names the file
            raise
        raise ValueError(f"{path}: cannot read {path.suffix} file: {err}") from err
    fmt = FORMATS[suffix]
    stored = np.asarray(stored)
    _checked(stored, path, max_ndim=3 if fmt in STACK_FORMATS else 2)
    dtype = stored.dtype.newbyteorder("=")  # the type, not the byte order, is what the user gave
    info = ImageInfo(fmt, dtype, shape=stored.shape, **fields)
    values = np.squeeze(info.to_values(stored))
    if not np.all(np.isfinite(values)):  # a huge RescaleSlope can overflow float32
        raise ValueError(f"{path}: image contains NaN or infinite values")
    return values, info


def read_image(path: str | Path) -> np.ndarray:
    """Read one image file as float32 (H, W); see the module docstring for each format's scaling."""
    path = Path(path)
    image, _ = read_image_with_info(path)
    if image.ndim != 2:
        raise ValueError(f"{path}: expected a 2-D image, got a {image.ndim}-D stack of shape {image.shape}")
    return image


def read_mdf_headers(path: str | Path, voxel_size: tuple[float, float, float] | None = None) -> ImageInfo:
    """An `ImageInfo` that writes MDF files with the root fields and header groups of the MDF file `path`
    (any MDF: a template of headers only, measurements, or a reconstruction); `voxel_size` (m, x y z)."""
    import h5py

    path = Path(path)
    try:
        with h5py.File(path, "r") as f:
            if "version" not in f:
                raise ValueError(f"{path}: not an MDF file (no /version)")
            headers = _mdf_headers(f, voxel_size)
    except OSError as err:
        raise ValueError(f"{path}: cannot read MDF headers: {err}") from err
    return ImageInfo("mdf", metadata=headers)


# ---------------------------------------------------------------------------------------------- writers
# Each writer gets the temporary path, the stored array (in its dtype and stored shape) and the info.
def _write_tiff(tmp: Path, stored: np.ndarray, info: ImageInfo) -> None:
    import tifffile

    keywords = dict(info.metadata or {})
    imagej = stored.dtype.type in IMAGEJ_DTYPES
    if not imagej:
        keywords.pop("metadata", None)  # ImageJ's spacing and axes have no place in a plain TIFF
    elif stored.ndim == 3 and "axes" not in keywords.get("metadata", {}):
        keywords["metadata"] = {**keywords.get("metadata", {}), "axes": "ZYX"}  # a stack is slices, not channels
    tifffile.imwrite(tmp, stored, imagej=imagej, **keywords)


def _write_npy(tmp: Path, stored: np.ndarray, info: ImageInfo) -> None:
    if tmp.suffix.lower() == ".npz":
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **{info.metadata or NPZ_KEY: stored})
    else:
        with open(tmp, "wb") as f:  # a file object stops numpy appending ".npy" to the temporary name
            np.save(f, stored)


def _write_png(tmp: Path, stored: np.ndarray, info: ImageInfo) -> None:
    from PIL import Image

    if stored.dtype not in (np.uint8, np.uint16, bool):
        raise ValueError(f"PNG holds 8- or 16-bit grayscale, not {stored.dtype}")
    Image.fromarray(stored).save(tmp, format="PNG")


def _write_mdf(tmp: Path, stored: np.ndarray, info: ImageInfo) -> None:
    import h5py

    headers = info.metadata
    with h5py.File(tmp, "w") as f:
        if headers is not None:
            headers.copy_into(f)
        _stamp_mdf_root(f)
        _write_reconstruction(f, stored, headers.voxel_size if headers is not None else None)


def _stamp_mdf_root(f) -> None:
    """The root fields MDF requires: the input's version is kept; `uuid` and `time` identify this file
    (the spec: its own UUID and creation time), so they are new, in the type the input stored them."""
    now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]
    for name, value in (("version", None), ("uuid", str(uuid.uuid4())), ("time", now)):
        if name not in f:
            f[name] = MDF_VERSION if value is None else value
        elif value is not None:
            _replace_string(f, name, value)


def _replace_string(f, name: str, value: str) -> None:
    """Put `value` in the string field `name`, in the field's own HDF5 string type.

    Fixed-length strings are written byte for byte through the file's type: h5py's conversion would keep a
    null-terminated field one byte short (a 36-byte UUID field written by Julia holds all 36 characters).
    A fixed-length field too short for `value` is widened; variable-length ones take any length.
    """
    import h5py

    dataset = f[name]
    string = h5py.check_string_dtype(dataset.dtype)
    if string is not None and string.length is None:
        dataset[...] = value
        return
    ftype = dataset.id.get_type().copy() if string is not None else h5py.h5t.C_S1.copy()
    if string is None or ftype.get_size() < len(value):
        shape = dataset.shape
        ftype.set_size(max(ftype.get_size(), len(value)))
        del f[name]
        space = h5py.h5s.create_simple(shape) if shape else h5py.h5s.create(h5py.h5s.SCALAR)
        dataset = h5py.Dataset(h5py.h5d.create(f.id, name.encode(), ftype, space))
    raw = np.full(dataset.shape, value.encode(), dtype=f"S{ftype.get_size()}")
    dataset.id.write(h5py.h5s.ALL, h5py.h5s.ALL, raw, mtype=ftype)


def _write_reconstruction(f, stored: np.ndarray, voxel_size) -> None:
    """/reconstruction per MDF v2: data Q x P x S and its grid (size, order, field of view and centre).

    Grid fields the headers carry (an input reconstruction's) are kept when they describe this grid;
    `fieldOfView` is written from `voxel_size` when the headers have none, and left out (it is optional)
    when nothing says how large a voxel is, rather than invented.
    """
    data, size = _mdf_layout(stored)
    group = f.require_group("reconstruction")
    if "size" in group and [int(n) for n in np.ravel(group["size"][()])] != size:
        for name in list(group):  # fields of another grid: start afresh
            del group[name]
    group["data"] = data
    if "size" not in group:
        group["size"] = np.array(size, dtype=np.int64)
    if "order" not in group:
        group["order"] = "xyz"
    if "fieldOfView" not in group and voxel_size is not None:
        group["fieldOfView"] = np.asarray(voxel_size, dtype=np.float64) * np.array(size)
    if "fieldOfView" in group and "fieldOfViewCenter" not in group:
        group["fieldOfViewCenter"] = np.zeros(3, dtype=np.float64)


def _mdf_layout(stored: np.ndarray) -> tuple[np.ndarray, list[int]]:
    """Stored array -> (data Q x P x S, size [nx, ny, nz]). A (Q, z, y, x, S) array is an MDF input's own
    layout; a 3-D array is one volume (z, y, x); a 2-D image is rows = z, columns = x, y = 1."""
    if stored.ndim == 5:
        q, nz, ny, nx, s = stored.shape
    elif stored.ndim == 3:
        (nz, ny, nx), q, s = stored.shape, 1, 1
    elif stored.ndim == 2:
        (nz, nx), ny, q, s = stored.shape, 1, 1, 1
    else:
        raise ValueError(f"MDF reconstruction data must be 2-D, 3-D or (Q, z, y, x, S), got shape {stored.shape}")
    return stored.reshape(q, nx * ny * nz, s), [nx, ny, nz]  # C order (z, y, x): x fastest


def _write_dicom(tmp: Path, stored: np.ndarray, info: ImageInfo) -> None:
    _import_pydicom(tmp)
    if info.metadata is None:
        ds = _new_dicom_dataset()
    else:
        ds = copy.deepcopy(info.metadata)
        _mark_derived(ds)
    _set_dicom_pixels(ds, stored)
    _set_file_meta(ds)
    _forget_encoding(ds)
    ds.save_as(tmp, enforce_file_format=True)


SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"


def _new_dicom_dataset():
    """A secondary-capture dataset for an image that came without one."""
    import pydicom
    from pydicom.uid import generate_uid

    ds = pydicom.Dataset()
    ds.SOPClassUID = SECONDARY_CAPTURE
    ds.SOPInstanceUID = generate_uid()
    ds.Modality = "OT"
    ds.PhotometricInterpretation = "MONOCHROME2"
    return ds


def _set_dicom_pixels(ds, stored: np.ndarray) -> None:
    """Replace the pixels and the tags that describe them (size, bits, sign); everything else is kept.

    Floats go to FloatPixelData / DoubleFloatPixelData (bit-exact); integers to PixelData, keeping the
    input's BitsStored when it fits (the values were clipped to it). Tags derived from the old pixels
    (smallest/largest value, frames) are dropped, and the data is written uncompressed.
    """
    old_bits = int(ds.BitsStored) if "BitsStored" in ds else None
    for keyword in ("PixelData", "FloatPixelData", "DoubleFloatPixelData", "SmallestImagePixelValue",
                    "LargestImagePixelValue", "NumberOfFrames", "BitsStored", "HighBit", "PixelRepresentation"):
        if keyword in ds:
            delattr(ds, keyword)
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel = 1
    if getattr(ds, "PhotometricInterpretation", None) not in ("MONOCHROME1", "MONOCHROME2"):
        ds.PhotometricInterpretation = "MONOCHROME2"
    bits = stored.dtype.itemsize * 8
    ds.BitsAllocated = bits
    pixels = np.ascontiguousarray(stored, dtype=stored.dtype.newbyteorder("<")).tobytes()
    if np.issubdtype(stored.dtype, np.floating):
        setattr(ds, "FloatPixelData" if bits == 32 else "DoubleFloatPixelData", pixels)
    else:
        ds.BitsStored = min(old_bits or bits, bits)
        ds.HighBit = ds.BitsStored - 1
        ds.PixelRepresentation = int(np.issubdtype(stored.dtype, np.signedinteger))
        ds.add_new(0x7FE00010, "OW" if bits > 8 else "OB", pixels)


def _mark_derived(ds) -> None:
    """A restored image is a new instance of a new, derived series in the same study: new SOPInstanceUID;
    a SeriesInstanceUID derived from the input's, so that the slices of one series stay one series."""
    from pydicom.uid import generate_uid

    ds.SOPInstanceUID = generate_uid()
    old_series = getattr(ds, "SeriesInstanceUID", None)
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=[str(old_series), "mpimamba restored"] if old_series else None)
    if "ImageType" in ds:
        ds.ImageType = ["DERIVED", "SECONDARY", *list(ds.ImageType)[2:]] if ds["ImageType"].VM > 1 else "DERIVED"
    ds.DerivationDescription = "restored by mpimamba calibrate"


def _forget_encoding(ds) -> None:
    """Parse every element and forget how the input was encoded, so that a big-endian or implicit-VR
    input is written in the file meta's explicit little endian (pydicom refuses to mix the two)."""
    for element in ds.iterall():
        if element.VR == "SQ":
            for item in element.value:
                item.set_original_encoding(None, None)
    ds.set_original_encoding(None, None)


def _set_file_meta(ds) -> None:
    """File meta that matches the dataset: its SOP class and instance, pixels uncompressed little endian."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    if not hasattr(ds, "file_meta"):
        ds.file_meta = FileMetaDataset()
    ds.SOPClassUID = getattr(ds, "SOPClassUID", None) or SECONDARY_CAPTURE
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian


_WRITERS = {
    **dict.fromkeys(TIFF_SUFFIXES, _write_tiff),
    ".npy": _write_npy,
    ".npz": _write_npy,
    ".png": _write_png,
    **dict.fromkeys(HDF5_SUFFIXES, _write_mdf),
    ".dcm": _write_dicom,
}


def _stored_shape(image: np.ndarray, info: ImageInfo, path: Path) -> tuple[int, ...]:
    """The shape to store `image` in: the input's own (its singleton axes back), if the image fits it."""
    if info.shape is None:
        return image.shape
    if np.squeeze(np.empty(info.shape, dtype=bool)).shape != image.shape:
        raise ValueError(f"{path}: image of shape {image.shape} does not fit the input's shape {info.shape}")
    return info.shape


def write_image_with_info(path: str | Path, array, info: ImageInfo | None = None,
                          overwrite: bool = False) -> Written:
    """Write values in the read scale as `info` says (dtype, shape, metadata; see the module docstring);
    atomic; never replaces a file unless asked. Returns the path and the number of clipped pixels."""
    path = Path(path)
    suffix = _suffix(path)
    fmt = FORMATS[suffix]
    if info is None or info.format != fmt:  # another format's scale and metadata do not apply here
        info = _default_info(fmt)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True (--overwrite) to replace it")
    image = _checked(array, path, max_ndim=3 if fmt in STACK_FORMATS else 2).astype(np.float32)
    stored, clipped = info.to_stored(image)
    stored = stored.reshape(_stored_shape(image, info, path))
    with atomic_path(path) as tmp:
        _WRITERS[suffix](tmp, stored, info)
    return Written(path, clipped, info)


def write_image(path: str | Path, array, overwrite: bool = False, *, png_bits: int = 16,
                info: ImageInfo | None = None) -> Path:
    """Write an image as float32 (PNG: quantised to `png_bits` over [0, 1]), or as `info` says; atomic;
    never replaces a file unless asked. Clipped pixels are reported in a warning."""
    path = Path(path)
    if info is None and FORMATS.get(path.suffix.lower()) == "png":
        info = _default_info("png", png_bits)
    written = write_image_with_info(path, array, info, overwrite)
    if written.clipped:
        warnings.warn(written.clip_message(), stacklevel=2)
    return path
