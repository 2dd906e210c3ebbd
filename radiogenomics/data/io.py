"""Image and mask files: reading through MONAI, atomic writing, channel-first arrays.

Every array here is channel-first, `(C, *spatial)`, with `spatial` in the file's own index order
(numpy row/column order for PNG/TIFF/NPY, voxel order for NIfTI and DICOM).
"""

from __future__ import annotations

import functools
import logging
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np

from radiogenomics._atomic import atomic_write

# MONAI's PydicomReader warns on every construction that the CUDA DICOM decoder is absent;
# the CPU decoder is the expected path here, so keep that one message quiet.
logging.getLogger("monai.data.nvimgcodec_pydicom_plugin").setLevel(logging.ERROR)

NIFTI = (".nii", ".nii.gz")
PIL_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp")
NUMPY = (".npy",)
DICOM = (".dcm", "dicom")
FORMATS = {
    "nii.gz": ".nii.gz",
    "nii": ".nii",
    "npy": ".npy",
    "png": ".png",
    "tif": ".tif",
    "dicom": "",
}


def suffix_of(path: str | Path) -> str:
    """The file type of `path`: '.nii.gz', '.png', ..., or 'dicom' for a folder of DICOM files."""
    path = Path(path)
    name = path.name.lower()
    if name.endswith(".nii.gz"):
        return ".nii.gz"
    if path.is_dir():
        return "dicom"
    return path.suffix.lower()


def _reader(path: Path):
    """The MONAI reader for `path`'s type (NPY is read by `_load_npy`). Called directly rather than
    through LoadImage, whose fall-back through every other reader turns one corrupt file into
    pages of tracebacks."""
    suffix = suffix_of(path)
    for kind, suffixes in (
        ("nifti", NIFTI),
        ("pil", PIL_SUFFIXES),
        ("dicom", DICOM),
    ):
        if suffix in suffixes:
            return _cached_reader(kind)
    raise ValueError(
        f"{path}: unsupported image file type {suffix!r}; use NIfTI (.nii/.nii.gz), a DICOM folder "
        f"or .dcm file, PNG/TIFF, or .npy"
    )


@functools.cache
def _cached_reader(kind: str):
    # MONAI readers by type; PIL without the (W, H) transpose so arrays match numpy order.
    from monai.data import NibabelReader, PILReader, PydicomReader

    with warnings.catch_warnings():  # see the logging note at the top: no CUDA decoder here
        warnings.simplefilter("ignore", UserWarning)
        return {
            "nifti": NibabelReader,
            "pil": lambda: PILReader(reverse_indexing=False),
            "dicom": PydicomReader,
        }[kind]()


def load_image(path: str | Path, spatial_dims: int | None = None) -> np.ndarray:
    """Read an image or mask file into a float32 `(C, *spatial)` array.

    `spatial_dims` decides where the channel axis is when the file does not say: an array with
    `spatial_dims` axes gets a channel axis of 1; one with an extra axis of size <= 4 at the start
    or end has that as channels. Anything else is a ValueError naming the file and its shape.
    """
    return read_image(path, spatial_dims)[0]


def read_image(
    path: str | Path, spatial_dims: int | None = None
) -> tuple[np.ndarray, tuple[float, ...] | None]:
    """`load_image` plus the voxel spacing of the spatial axes, in array order, from the file's
    affine (NIfTI, DICOM); None for formats that carry no geometry (PNG/TIFF, NPY)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"image file not found: {path}")
    if suffix_of(path) in NUMPY:
        data, meta = _load_npy(path), {}
    else:
        reader = _reader(path)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                data, meta = reader.get_data(reader.read(str(path)))
        except Exception as err:  # a corrupt file surfaces as many different library errors
            first = (str(err).strip().splitlines() or [""])[0][:300]
            raise ValueError(
                f"cannot read image file {path}: {type(err).__name__}: {first}"
            ) from err
    arr = np.asarray(data, dtype=np.float32)
    meta_channel = meta.get("original_channel_dim", float("nan"))
    axis = _channel_axis(arr.shape, spatial_dims, meta_channel, str(path))
    spacing = _spacing(meta.get("affine"), arr.ndim, axis)
    return (arr[None] if axis is None else np.moveaxis(arr, axis, 0)), spacing


def read_slices(path: str | Path, slice_axis: int) -> tuple[np.ndarray, tuple[float, ...] | None]:
    """A file that stacks 2D slices (a cohort with `uns["rg"]["slice_axis"]`, docs/data.md)
    as `(S, C, H, W)`, and the spacing of the slice plane (None where the format has none).

    The file is read as a 3D array, `(C, X, Y, Z)` as `read_image` gives it (a NIfTI's
    channels from its header, NPY channel-first); `slice_axis` (0, 1 or 2) is the spatial axis
    that runs across the slices: 2 for the axial slices of a NIfTI volume `(X, Y, Z)`. PNG
    and TIFF hold one 2D image: reading one as a stack would turn a colour image's 3
    channels into 3 slices, so they are refused.
    """
    path = Path(path)
    if slice_axis not in (0, 1, 2):
        raise ValueError(f"slice_axis must be 0, 1 or 2 (a spatial axis); got {slice_axis!r}")
    if suffix_of(path) in PIL_SUFFIXES:
        raise ValueError(
            f"{path}: a {suffix_of(path)} file holds one 2D image, not a stack of slices; "
            "write slice stacks as NIfTI, a DICOM folder or NPY"
        )
    arr, spacing = read_image(path, 3)
    if spacing is not None:
        spacing = tuple(v for i, v in enumerate(spacing) if i != slice_axis)
    return np.moveaxis(arr, 1 + slice_axis, 0), spacing


def _load_npy(path: Path) -> np.ndarray:
    # Read here rather than by MONAI's NumpyReader, which loads pickles in some MONAI versions
    # this package admits: unpickling a file from an image folder can run code.
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError) as err:
        why = str(err)
        if "Object arrays" in why:
            why = "it holds Python objects (a pickle); save a plain numeric array"
        elif "allow_pickle" in why:
            why = "not a .npy array (numpy would unpickle it)"
        raise ValueError(
            f"cannot read image file {path}: {why}; pickles are never loaded (they can run code)"
        ) from None


def _spacing(affine, ndim: int, channel_axis: int | None) -> tuple[float, ...] | None:
    """Voxel spacing per spatial axis: the lengths of the affine's axis columns."""
    if affine is None:
        return None
    affine = np.asarray(affine, dtype=np.float64)
    n = min(ndim, affine.shape[1] - 1)
    axes = [float(np.linalg.norm(affine[:-1, i])) for i in range(n)] + [1.0] * (ndim - n)
    # 6 significant digits: NIfTI stores float32, so 0.7 comes back as 0.699999988
    return tuple(float(f"{v:.6g}") for i, v in enumerate(axes) if i != channel_axis)


def _channel_axis(shape, spatial_dims: int | None, meta_channel, source: str) -> int | None:
    """The channel axis of an array of `shape` (None: it has none, add one), checking that the
    rest are `spatial_dims` spatial axes."""
    ndim = len(shape)
    if isinstance(meta_channel, (int, np.integer)) and ndim >= 3:
        axis = int(meta_channel) % ndim
        if spatial_dims is not None and ndim - 1 != spatial_dims:
            first = (shape[axis], *(s for i, s in enumerate(shape) if i != axis))
            raise ValueError(
                f"{source}: shape {tuple(first)} (channels first) has {ndim - 1} spatial "
                f"dims, but the cohort has spatial_dims={spatial_dims}"
            )
        return axis
    if spatial_dims is None:
        spatial_dims = ndim
    if ndim == spatial_dims:
        return None
    if ndim == spatial_dims + 1:
        if shape[0] <= 4:
            return 0
        if shape[-1] <= 4:
            return ndim - 1
    raise ValueError(
        f"{source}: shape {tuple(shape)} does not fit spatial_dims={spatial_dims} "
        f"(expected {spatial_dims} spatial axes plus at most one channel axis of size <= 4)"
    )


def to_channel_first(arr: np.ndarray, spatial_dims: int | None, meta_channel=None, source="array"):
    """Put the channel axis first, checking the number of spatial axes."""
    axis = _channel_axis(arr.shape, spatial_dims, meta_channel, source)
    return arr[None] if axis is None else np.moveaxis(arr, axis, 0)


# atomic writing lives in the leaf module radiogenomics._atomic (config and train use it too)


def save_image(
    array: np.ndarray, path: str | Path, spacing: tuple[float, ...] | list[float] | None = None
) -> Path:
    """Write a `(C, *spatial)` array to `path`, the format chosen by its suffix, atomically.

    `spacing` (one value per spatial axis, default 1) goes into the NIfTI affine or the DICOM
    pixel spacing and slice positions; PNG/TIFF/NPY carry no geometry and ignore it.
    PNG/TIFF hold 2D only: integer arrays are written as they are (uint8/uint16), float arrays
    in [0, 1] as uint16. Writing is plain nibabel/PIL/numpy/pydicom: MONAI's writers add
    resampling and metadata handling that these fixed-grid files do not need.
    """
    array = np.asarray(array)
    path = Path(path)
    suffix = ".nii.gz" if path.name.lower().endswith(".nii.gz") else path.suffix.lower()
    if array.ndim < 3:
        raise ValueError(
            f"{path}: save_image takes a channel-first (C, *spatial) array; got {array.shape}"
        )
    spacing = _check_spacing(spacing, array.ndim - 1, path)
    if suffix in NIFTI:
        import nibabel as nib

        data = array[0] if array.shape[0] == 1 else np.moveaxis(array, 0, -1)
        # spatial axes come first in the file (channels last), so the diagonal lines up with them
        affine = np.diag([*spacing, *[1.0] * (3 - len(spacing)), 1.0])
        return atomic_write(path, lambda tmp: nib.save(nib.Nifti1Image(data, affine), tmp))
    if suffix in NUMPY:
        return atomic_write(path, lambda tmp: np.save(tmp, array))
    if suffix in PIL_SUFFIXES:
        return atomic_write(path, lambda tmp: _save_pil(array, tmp, path))
    if suffix in ("", ".dcm"):
        return _save_dicom_series(array, path, spacing)
    raise ValueError(f"{path}: cannot write image file type {suffix!r}")


def _check_spacing(spacing, n: int, path: Path) -> tuple[float, ...]:
    if spacing is None:
        return (1.0,) * n
    values = tuple(float(v) for v in spacing)
    if len(values) != n or not all(np.isfinite(v) and v > 0 for v in values):
        raise ValueError(
            f"{path}: spacing {list(values)} must be {n} positive numbers, one per spatial axis"
        )
    return values


def _save_pil(array: np.ndarray, tmp: Path, path: Path) -> None:
    from PIL import Image

    if array.ndim != 3 or array.shape[0] not in (1, 3, 4):
        raise ValueError(
            f"{path}: PNG/TIFF hold 2D images with 1, 3 or 4 channels; got shape {array.shape}"
        )
    if np.issubdtype(array.dtype, np.floating):
        if array.min() < 0 or array.max() > 1:
            raise ValueError(f"{path}: float images written as PNG/TIFF must lie in [0, 1]")
        array = np.round(array * 65535).astype(np.uint16)
        if array.shape[0] != 1:
            raise ValueError(
                f"{path}: 16-bit PNG/TIFF must be single-channel; write uint8 for colour"
            )
    elif array.dtype == np.bool_ or array.max() <= 255 and array.min() >= 0:
        array = array.astype(np.uint8)
    elif array.min() >= 0 and array.max() <= 65535 and array.shape[0] == 1:
        array = array.astype(np.uint16)
    else:
        raise ValueError(
            f"{path}: integer values outside the PNG/TIFF range (uint8 or 1-channel uint16)"
        )
    data = array[0] if array.shape[0] == 1 else np.moveaxis(array, 0, -1)
    Image.fromarray(data).save(tmp, format=Image.registered_extensions()[path.suffix.lower()])


def _save_dicom_series(array: np.ndarray, path: Path, spacing: tuple[float, ...]) -> Path:
    """Write a single-channel volume as a folder of DICOM slices (or one .dcm for a 2D image).

    Values are stored as uint16 with a rescale slope/intercept, so float data comes back within
    one quantisation step. The folder is written under a temporary name and renamed. Each call
    is a new study and series (fresh UIDs): readers group slices by SeriesInstanceUID, so two
    patients' series must never share one.
    """
    import shutil

    from pydicom.uid import generate_uid

    if array.shape[0] != 1:
        raise ValueError(
            f"{path}: DICOM writing takes single-channel arrays; got {array.shape[0]} channels"
        )
    data = array[0].astype(np.float64)
    lo, hi = float(data.min()), float(data.max())
    slope = (hi - lo) / 65535 if hi > lo else 1.0
    stored = np.round((data - lo) / slope).astype(np.uint16)
    uids = {"study": generate_uid(), "series": generate_uid(), "frame": generate_uid()}
    if path.suffix.lower() == ".dcm":
        if stored.ndim != 2:
            raise ValueError(
                f"{path}: a single .dcm file holds a 2D image; write a 3D volume to a folder"
            )
        return atomic_write(
            path,
            lambda tmp: _dicom_slice(stored, lo, slope, 0, spacing, uids).save_as(
                tmp, enforce_file_format=True
            ),
        )
    if stored.ndim != 3:
        raise ValueError(
            f"{path}: a DICOM folder holds a 3D volume; got spatial shape {stored.shape}"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        for k in range(stored.shape[2]):
            _dicom_slice(stored[:, :, k], lo, slope, k, spacing, uids).save_as(
                tmp / f"slice_{k:04d}.dcm", enforce_file_format=True
            )
        # Swap folders by renames so a crash leaves the old series or the new one, never neither.
        old = path.with_name(f".{path.name}.old")
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def _dicom_slice(
    plane: np.ndarray,
    intercept: float,
    slope: float,
    index: int,
    spacing: tuple[float, ...],
    uids: dict[str, str],
):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "CT"
    ds.StudyInstanceUID = uids["study"]
    ds.SeriesInstanceUID = uids["series"]  # shared by the slices of one folder
    ds.FrameOfReferenceUID = uids["frame"]
    ds.InstanceNumber = index + 1
    thickness = spacing[2] if len(spacing) > 2 else 1.0
    ds.ImagePositionPatient = [0.0, 0.0, float(index) * thickness]
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    # DICOM stores rows x columns; MONAI's PydicomReader returns (columns, rows), so transpose.
    # PixelSpacing is (between rows, between columns): array axis 1, then axis 0.
    ds.PixelSpacing = [_ds(spacing[1]), _ds(spacing[0])]
    ds.SliceThickness = _ds(thickness)
    pixels = np.ascontiguousarray(plane.T)
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.RescaleIntercept = _ds(intercept)
    ds.RescaleSlope = _ds(slope)
    ds.PixelData = pixels.tobytes()
    return ds


def _ds(value: float) -> str:
    # DICOM decimal strings hold at most 16 characters
    return f"{value:.10g}"[:16]
