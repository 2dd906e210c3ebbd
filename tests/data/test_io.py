"""Image and mask files: round trips per format, shape checks, corrupt files, atomic writes."""

from __future__ import annotations

import re

import numpy as np
import pytest

from radiogenomics._atomic import atomic_write, atomic_write_text
from radiogenomics.data.io import (
    load_image,
    read_image,
    save_image,
    suffix_of,
)

# Spatial sizes larger than 4 on every axis, so no axis can pass for a channel axis.
SHAPE = {2: (9, 7), 3: (9, 7, 6)}


def _float_image(channels: int, spatial_dims: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(10.0, 3.0, (channels, *SHAPE[spatial_dims])).astype(np.float32)


def _uint8_image(channels: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (channels, *SHAPE[2])).astype(np.uint8)


# (file name, spatial_dims, channels): every combination the formats allow
EXACT_CASES = [
    (name, sd, c) for sd in (2, 3) for c in (1, 3) for name in ("img.nii.gz", "img.nii", "img.npy")
]


@pytest.mark.parametrize("name, spatial_dims, channels", EXACT_CASES)
def test_round_trip_nifti_npy_exact(tmp_path, name, spatial_dims, channels):
    array = _float_image(channels, spatial_dims)
    path = save_image(array, tmp_path / name)
    assert path == tmp_path / name and path.is_file()
    back = load_image(path, spatial_dims)
    assert back.dtype == np.float32
    assert back.shape == (channels, *SHAPE[spatial_dims])
    np.testing.assert_array_equal(back, array)


@pytest.mark.parametrize("suffix", [".png", ".tif", ".tiff"])
@pytest.mark.parametrize("channels", [1, 3])
def test_round_trip_png_tiff_uint8_exact(tmp_path, suffix, channels):
    array = _uint8_image(channels)
    path = save_image(array, tmp_path / f"img{suffix}")
    back = load_image(path, 2)
    assert back.shape == (channels, *SHAPE[2])
    np.testing.assert_array_equal(back, array.astype(np.float32))


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_round_trip_png_tiff_float_as_uint16(tmp_path, suffix):
    array = np.random.default_rng(1).random((1, *SHAPE[2])).astype(np.float32)
    path = save_image(array, tmp_path / f"img{suffix}")
    back = load_image(path, 2)
    assert back.shape == array.shape
    # stored as uint16 0..65535
    np.testing.assert_array_equal(back, np.round(array * 65535))


def test_round_trip_png_binary_mask(tmp_path):
    mask = np.zeros((1, *SHAPE[2]), dtype=bool)
    mask[0, 2:6, 1:4] = True
    back = load_image(save_image(mask, tmp_path / "mask.png"), 2)
    np.testing.assert_array_equal(back, mask.astype(np.float32))


def _quantisation_step(array: np.ndarray) -> float:
    return float(array.max() - array.min()) / 65535


def test_round_trip_dicom_single_file_2d(tmp_path):
    array = _float_image(1, 2) * 100 - 500  # negative values and a wide range, like CT in HU
    path = save_image(array, tmp_path / "slice.dcm")
    assert path.is_file()
    back = load_image(path, 2)
    assert back.shape == array.shape
    step = _quantisation_step(array)
    assert np.abs(back - array).max() <= step
    # and not trivially: the values really span the range
    assert back.min() == pytest.approx(array.min(), abs=step)
    assert back.max() == pytest.approx(array.max(), abs=step)


def test_round_trip_dicom_series_folder_3d(tmp_path):
    array = _float_image(1, 3) * 100 - 500
    path = save_image(array, tmp_path / "series")
    assert path.is_dir()
    assert sorted(p.name for p in path.iterdir()) == [
        f"slice_{k:04d}.dcm" for k in range(SHAPE[3][2])
    ]
    assert suffix_of(path) == "dicom"
    back = load_image(path, 3)
    assert back.shape == array.shape
    assert np.abs(back - array).max() <= _quantisation_step(array)
    # no temporary folder is left beside it
    assert [p.name for p in tmp_path.iterdir()] == ["series"]


def test_dicom_series_overwrite_replaces_folder(tmp_path):
    first = _float_image(1, 3, seed=1)
    second = np.zeros((1, 9, 7, 8), np.float32)
    second[0, 3:5, 2:4, 1:6] = 1
    save_image(first, tmp_path / "series")
    save_image(second, tmp_path / "series")
    assert len(list((tmp_path / "series").iterdir())) == 8
    np.testing.assert_array_equal(load_image(tmp_path / "series", 3), second)


def test_constant_dicom_image(tmp_path):
    array = np.full((1, *SHAPE[2]), 7.0, np.float32)
    back = load_image(save_image(array, tmp_path / "flat.dcm"), 2)
    np.testing.assert_allclose(back, array)


@pytest.mark.parametrize(
    "name, array, pattern",
    [
        ("img.png", np.zeros((1, 9, 7, 6), np.uint8), r"PNG/TIFF hold 2D images"),
        (
            "img.png",
            np.zeros((2, 9, 7), np.uint8),
            r"PNG/TIFF hold 2D images with 1, 3 or 4 channels",
        ),
        ("img.png", np.full((1, 9, 7), 2.0, np.float32), r"must lie in \[0, 1\]"),
        ("img.png", np.full((3, 9, 7), 0.5, np.float32), r"16-bit PNG/TIFF must be single-channel"),
        ("img.tif", np.full((1, 9, 7), -3, np.int16), r"integer values outside the PNG/TIFF range"),
        ("img.dcm", np.zeros((3, 9, 7), np.float32), r"single-channel"),
        ("img.dcm", np.zeros((1, 9, 7, 6), np.float32), r"a single \.dcm file holds a 2D image"),
        ("series", np.zeros((1, 9, 7), np.float32), r"a DICOM folder holds a 3D volume"),
        ("img.nii.gz", np.zeros((9, 7), np.float32), r"channel-first \(C, \*spatial\) array"),
        ("img.jpg2", np.zeros((1, 9, 7), np.float32), r"cannot write image file type '\.jpg2'"),
    ],
)
def test_save_image_rejects_what_the_format_cannot_hold(tmp_path, name, array, pattern):
    with pytest.raises(ValueError, match=pattern) as info:
        save_image(array, tmp_path / name)
    assert name in str(info.value)
    assert list(tmp_path.iterdir()) == []  # nothing half-written


@pytest.mark.parametrize(
    "name, array",
    [
        ("vol.nii.gz", np.zeros((1, *SHAPE[3]), np.float32)),
        ("vol.nii", np.zeros((1, *SHAPE[3]), np.float32)),
        ("vol.npy", np.zeros((1, *SHAPE[3]), np.float32)),
        ("vol3c.npy", np.zeros((3, *SHAPE[3]), np.float32)),
        ("series", np.zeros((1, *SHAPE[3]), np.float32)),
    ],
)
def test_3d_file_in_2d_raises_naming_file_and_shape(tmp_path, name, array):
    path = save_image(array, tmp_path / name)
    with pytest.raises(ValueError, match="spatial_dims=2") as info:
        load_image(path, 2)
    msg = str(info.value)
    assert str(path) in msg
    assert re.search(r"shape \(.*9, 7, 6\)", msg), msg


@pytest.mark.parametrize("name", ["img.nii.gz", "img.png", "img.tif", "img.dcm"])
def test_2d_file_in_3d_raises_naming_file_and_shape(tmp_path, name):
    array = np.zeros((1, *SHAPE[2]), np.uint8 if name.endswith((".png", ".tif")) else np.float32)
    path = save_image(array, tmp_path / name)
    with pytest.raises(ValueError, match=r"shape \(9, 7\) does not fit spatial_dims=3") as info:
        load_image(path, 3)
    assert str(path) in str(info.value)


def test_rgb_png_in_3d_raises(tmp_path):
    path = save_image(_uint8_image(3), tmp_path / "rgb.png")
    with pytest.raises(
        ValueError,
        match=r"shape \(3, 9, 7\) \(channels first\) has 2 spatial dims, but the cohort has spatial_dims=3",
    ) as info:
        load_image(path, 3)
    assert str(path) in str(info.value)


def test_spatial_dims_none_takes_the_files_axes(tmp_path):
    vol = save_image(_float_image(1, 3), tmp_path / "vol.nii.gz")
    assert load_image(vol).shape == (1, *SHAPE[3])
    img = save_image(_float_image(1, 2), tmp_path / "img.nii.gz")
    assert load_image(img).shape == (1, *SHAPE[2])


def test_channel_last_npy_is_moved_first(tmp_path):
    array = _float_image(3, 2)
    np.save(tmp_path / "hwc.npy", np.moveaxis(array, 0, -1))
    np.testing.assert_array_equal(load_image(tmp_path / "hwc.npy", 2), array)


@pytest.mark.parametrize(
    "name", ["bad.nii.gz", "bad.nii", "bad.png", "bad.tif", "bad.npy", "bad.dcm"]
)
def test_corrupt_file_raises_value_error_naming_it(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"\x00garbage\xff" * 40)
    with pytest.raises(ValueError, match=rf"cannot read image file {re.escape(str(path))}"):
        load_image(path, 2)


def test_folder_without_dicom_raises_value_error(tmp_path):
    folder = tmp_path / "series"
    folder.mkdir()
    (folder / "slice_0000.dcm").write_bytes(b"not a dicom" * 20)
    with pytest.raises(ValueError, match=rf"cannot read image file {re.escape(str(folder))}"):
        load_image(folder, 3)


def test_unsupported_suffix_raises_value_error(tmp_path):
    path = tmp_path / "img.xyz"
    path.write_bytes(b"123")
    with pytest.raises(ValueError, match=r"img\.xyz: unsupported image file type '\.xyz'"):
        load_image(path, 2)


@pytest.mark.parametrize("name", ["missing.nii.gz", "missing.png", "missing_series"])
def test_missing_file_raises_file_not_found(tmp_path, name):
    path = tmp_path / name
    with pytest.raises(FileNotFoundError, match=rf"image file not found: {re.escape(str(path))}"):
        load_image(path, 2)


def test_suffix_of(tmp_path):
    assert suffix_of("a/b/img.NII.GZ") == ".nii.gz"
    assert suffix_of("img.nii") == ".nii"
    assert suffix_of("img.PNG") == ".png"
    assert suffix_of(tmp_path) == "dicom"


# ------------------------------------------------------------------------------------------
# atomic writing


def test_atomic_write_keeps_old_file_when_writer_raises(tmp_path):
    path = tmp_path / "out.nii.gz"
    path.write_text("old content")
    seen = {}

    def failing(tmp):
        seen["tmp"] = tmp
        tmp.write_text("half of a new fi")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(path, failing)
    assert path.read_text() == "old content"
    assert [p.name for p in tmp_path.iterdir()] == ["out.nii.gz"]
    # the writer saw a temporary name beside the target that keeps the suffix
    assert seen["tmp"].parent == tmp_path
    assert seen["tmp"].name.endswith(".nii.gz") and seen["tmp"] != path


def test_atomic_write_keeps_old_file_on_keyboard_interrupt(tmp_path):
    path = tmp_path / "out.npy"
    np.save(path, np.arange(3))

    def interrupted(tmp):
        np.save(tmp, np.arange(10))
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, interrupted)
    np.testing.assert_array_equal(np.load(path), np.arange(3))
    assert [p.name for p in tmp_path.iterdir()] == ["out.npy"]


def test_atomic_write_no_file_when_first_write_fails(tmp_path):
    def failing(tmp):
        raise OSError("no")

    with pytest.raises(OSError, match="no"):
        atomic_write(tmp_path / "new" / "x.txt", failing)
    assert list((tmp_path / "new").iterdir()) == []


def test_atomic_write_replaces_and_leaves_no_temp(tmp_path):
    path = tmp_path / "x.txt"
    path.write_text("old")
    assert atomic_write_text(path, "new") == path
    assert path.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["x.txt"]


def test_save_image_failure_keeps_old_image(tmp_path, monkeypatch):
    path = save_image(_float_image(1, 2), tmp_path / "img.npy")
    before = np.load(path)

    def boom(*args, **kwargs):
        raise OSError("write failed")

    monkeypatch.setattr(np, "save", boom)
    with pytest.raises(OSError, match="write failed"):
        save_image(np.zeros((1, *SHAPE[2]), np.float32), path)
    monkeypatch.undo()
    np.testing.assert_array_equal(np.load(path), before)
    assert [p.name for p in tmp_path.iterdir()] == ["img.npy"]


# ------------------------------------------------------------------------------------------
# spacing, DICOM identity, pickles


@pytest.mark.parametrize(
    "name, spatial_dims",
    [("vol.nii.gz", 3), ("vol.nii", 3), ("series", 3), ("img.nii.gz", 2), ("img.dcm", 2)],
)
def test_spacing_round_trip(tmp_path, name, spatial_dims):
    spacing = (0.5, 0.7, 2.0)[:spatial_dims]
    path = save_image(_float_image(1, spatial_dims), tmp_path / name, spacing=spacing)
    back, got = read_image(path, spatial_dims)
    assert back.shape == (1, *SHAPE[spatial_dims])
    assert got == pytest.approx(spacing)


def test_spacing_of_multichannel_nifti_and_default(tmp_path):
    path = save_image(_float_image(3, 2), tmp_path / "rgb.nii.gz", spacing=(0.5, 0.7))
    assert read_image(path, 2)[1] == pytest.approx((0.5, 0.7))
    assert read_image(save_image(_float_image(1, 3), tmp_path / "v.nii.gz"), 3)[1] == (1, 1, 1)
    # formats without geometry have no spacing
    assert read_image(save_image(_float_image(1, 3), tmp_path / "v.npy", (2, 2, 2)), 3)[1] is None
    with pytest.raises(ValueError, match=r"w\.nii\.gz: spacing \[0\.5, 0\.0\] must be 3"):
        save_image(_float_image(1, 3), tmp_path / "w.nii.gz", spacing=(0.5, 0.0))


def test_dicom_series_get_their_own_uids(tmp_path):
    import pydicom

    save_image(_float_image(1, 3, seed=1), tmp_path / "a")
    save_image(_float_image(1, 3, seed=2), tmp_path / "b")
    a = [pydicom.dcmread(f) for f in sorted((tmp_path / "a").iterdir())]
    b = [pydicom.dcmread(f) for f in sorted((tmp_path / "b").iterdir())]
    # one series per folder: the slices share Study and Series UIDs, each slice its own SOP UID
    for series in (a, b):
        assert len({d.SeriesInstanceUID for d in series}) == 1
        assert len({d.StudyInstanceUID for d in series}) == 1
        assert len({d.SOPInstanceUID for d in series}) == len(series)
    assert a[0].SeriesInstanceUID != b[0].SeriesInstanceUID
    assert a[0].StudyInstanceUID != b[0].StudyInstanceUID
    assert not {d.SOPInstanceUID for d in a} & {d.SOPInstanceUID for d in b}


def test_pickled_npy_is_refused(tmp_path):
    path = tmp_path / "evil.npy"
    np.save(path, np.array([{"payload": 1}, None], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match=r"evil\.npy: it holds Python objects \(a pickle\)"):
        load_image(path, 2)
