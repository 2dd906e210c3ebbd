"""Cohorts of slice stacks: files that hold several 2D slices of one patient (docs/data.md,
"Slice stacks"), declared by uns['rg']['slice_axis'], validated, loaded slice by slice."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import STACK_SLICES, write_stacked_cohort

from radiogenomics import _keys as K
from radiogenomics.config import DataConfig
from radiogenomics.data.cohort import CohortError, make_cohort, setup_cohort, validate_cohort
from radiogenomics.data.dataset import (
    CohortDataset,
    evaluation_slice,
    load_images,
    load_slices,
)
from radiogenomics.data.h5ad import read_cohort, write_cohort
from radiogenomics.data.io import read_slices, save_image
from radiogenomics.data.manifest import build_cohort
from radiogenomics.data.merge import merge_cohorts

# fixed intensities: a file value v reads back as 2 v - 1, so the markers survive loading
FIXED = DataConfig(spatial_dims=2, intensity="fixed", a_min=0.0, a_max=1.0)


def marker(images: torch.Tensor) -> np.ndarray:
    """(patient number, slice) of each image, from the marker in pixel (0, 0)."""
    code = np.rint((images[:, 0, 0, 0].numpy() + 1) / 2 * 1000).astype(int)
    return np.c_[code // 10, code % 10]


@pytest.fixture
def cohort_dir(tmp_path):
    write_stacked_cohort(tmp_path)
    return tmp_path


def test_validate_counts_slices_per_patient(stacked_cohort):
    adata = stacked_cohort.copy()
    summary = validate_cohort(adata, progress=False)
    assert adata.uns["rg"][K.SLICE_AXIS] == 2 and isinstance(adata.uns["rg"][K.SLICE_AXIS], int)
    assert adata.obs[K.N_SLICES].tolist() == STACK_SLICES
    assert summary["slices"] == sum(STACK_SLICES) == 31
    assert summary["slices_per_patient"] == {"min": 1, "median": 2.5, "max": 5}
    # patients with 3 slices of 3 channels: 3 channels, not 3 more slices or 9 of one channel
    assert summary["image_size"] == [16, 16] and adata.uns["rg"][K.CHANNELS] == 3


def test_validate_refuses_a_mask_stack_of_another_length_naming_the_patient(cohort_dir):
    adata = read_cohort(cohort_dir / "cohort.h5ad")
    mask = read_slices(cohort_dir / "masks" / "P003.nii.gz", 2)[0]  # (4, 1, 16, 16)
    save_image(np.moveaxis(mask[:3], 0, -1), cohort_dir / "masks" / "P003.nii.gz")
    with pytest.raises(CohortError, match=r"patient 'P003'.*stacks 4 slices but mask.*stacks 3"):
        validate_cohort(adata, progress=False)


def test_a_stack_is_declared_never_guessed(cohort_dir, tmp_path_factory):
    adata = read_cohort(cohort_dir / "cohort.h5ad")
    # the same files without the declaration are 3D arrays, which a 2D cohort refuses
    del adata.uns["rg"][K.SLICE_AXIS]
    with pytest.raises(CohortError, match="spatial dims, but the cohort has spatial_dims=2"):
        validate_cohort(adata, progress=False)
    # a declared stack of 2D colour images (PNG) is refused, not read as 3 slices
    png = tmp_path_factory.mktemp("png")
    save_image(np.zeros((3, 8, 8), np.uint8), png / "a.png")
    save_image(np.zeros((1, 8, 8), np.uint8), png / "m.png")
    obs = pd.DataFrame({"image": ["a.png"], "mask": ["m.png"]}, index=["P1"])
    flat = make_cohort(None, obs, slice_axis=2)
    flat.uns["rg"]["root"] = str(png)
    with pytest.raises(CohortError, match=r"patient 'P1'.*holds one 2D image, not a stack"):
        validate_cohort(flat, progress=False)
    # stacks of 2D slices only: never a 3D cohort
    with pytest.raises(CohortError, match="spatial_dims 2"):
        setup_cohort(flat.copy(), spatial_dims=3, slice_axis=2)
    flat.uns["rg"][K.SPATIAL_DIMS] = 3
    with pytest.raises(CohortError, match="a cohort of slice stacks has spatial_dims 2"):
        validate_cohort(flat, progress=False)


def test_load_slices_gives_every_slice_with_its_patient(stacked_cohort):
    rows = np.array([7, 2, 0])  # any order: owner indexes rows
    images, masks, owner = load_slices(stacked_cohort, FIXED, rows)
    n = [STACK_SLICES[r] for r in rows]
    assert images.shape == (sum(n), 3, 16, 16) and masks.shape == (sum(n), 1, 16, 16)
    np.testing.assert_array_equal(owner, np.repeat(np.arange(3), n))
    expected = np.concatenate(
        [np.c_[np.full(k, r), np.arange(k)] for r, k in zip(rows, n, strict=True)]
    )
    np.testing.assert_array_equal(marker(images), expected)  # in scan order
    assert set(masks.unique().tolist()) == {0.0, 1.0} and (masks.sum((1, 2, 3)) > 0).all()


def test_load_images_gives_each_patient_its_evaluation_slice(stacked_cohort):
    images, masks = load_images(stacked_cohort, FIXED)
    assert images.shape == (12, 3, 16, 16) and masks.shape == (12, 1, 16, 16)
    picks = [
        evaluation_slice(p, n) for p, n in zip(stacked_cohort.obs_names, STACK_SLICES, strict=True)
    ]
    np.testing.assert_array_equal(marker(images), np.c_[np.arange(12), picks])
    every, every_mask, owner = load_slices(stacked_cohort, FIXED)
    first = np.cumsum(STACK_SLICES) - STACK_SLICES
    assert torch.equal(every[first + picks], images)
    assert torch.equal(every_mask[first + picks], masks)
    # the pick follows the id, not the row: the same in any subset (a split's test half)
    sub, _ = load_images(stacked_cohort, FIXED, np.array([9, 3]))
    assert torch.equal(sub, images[[9, 3]])
    assert len({evaluation_slice(f"P{i}", 5) for i in range(40)}) == 5  # every slice is picked


def test_each_slice_loads_like_a_file_of_that_slice(stacked_cohort, tmp_path):
    # percentile scaling and resizing run per slice: a stack loads as its slices would
    cfg = DataConfig(spatial_dims=2, intensity="percentile", image_size=[8, 8])
    stack, stack_masks, _ = load_slices(stacked_cohort, cfg, np.array([3]))
    root = stacked_cohort.uns["rg"]["root"]
    image = read_slices(f"{root}/images/P003.nii.gz", 2)[0]
    mask = read_slices(f"{root}/masks/P003.nii.gz", 2)[0]
    rows = {}
    for s in range(len(image)):
        save_image(image[s], tmp_path / f"i{s}.nii.gz")
        save_image(mask[s], tmp_path / f"m{s}.nii.gz")
        rows[f"S{s}"] = {"image": f"i{s}.nii.gz", "mask": f"m{s}.nii.gz"}
    single = make_cohort(None, pd.DataFrame.from_dict(rows, orient="index"))
    single.uns["rg"]["root"] = str(tmp_path)
    validate_cohort(single, progress=False)
    images, masks = load_images(single, cfg)
    torch.testing.assert_close(stack, images, atol=1e-5, rtol=0)
    assert torch.equal(stack_masks, masks)


def test_dataset_items_are_patients_with_their_stacks(stacked_cohort):
    ds = CohortDataset(stacked_cohort, FIXED)
    item = ds[7]
    assert item["image"].shape == (5, 3, 16, 16) and item["mask"].shape == (5, 1, 16, 16)
    assert item["expression"][0] == 7  # G0 is the patient's number: one profile per patient
    augmented = CohortDataset(stacked_cohort, DataConfig(spatial_dims=2, augment=True))
    assert augmented[7]["image"].shape == (5, 3, 16, 16)


def test_slice_axis_reads_back_splits_and_merges(stacked_cohort, tmp_path):
    from radiogenomics.data.cohort import split_cohort

    train, test = split_cohort(stacked_cohort, 0.25, seed=0)
    for half in (train, test):
        assert half.uns["rg"][K.SLICE_AXIS] == 2
    path = write_cohort(test, tmp_path / "test.h5ad")
    back = read_cohort(path)
    assert back.uns["rg"][K.SLICE_AXIS] == 2
    assert validate_cohort(back, progress=False)["slices"] == int(test.obs[K.N_SLICES].sum())
    merged = merge_cohorts([train, test], names=["a", "b"])
    assert merged.uns["rg"][K.SLICE_AXIS] == 2
    flat = test.copy()
    del flat.uns["rg"][K.SLICE_AXIS]
    with pytest.raises(CohortError, match="differ in slice_axis"):
        merge_cohorts([train, flat], names=["a", "b"])


def test_manifest_declares_the_slice_axis(cohort_dir):
    ids = [f"P{i:03d}" for i in range(len(STACK_SLICES))]
    pd.DataFrame(
        {"id": ids, "image": [f"images/{p}.nii.gz" for p in ids],
         "mask": [f"masks/{p}.nii.gz" for p in ids]}
    ).to_csv(cohort_dir / "images.csv", index=False)  # fmt: skip
    manifest = cohort_dir / "m.yaml"
    manifest.write_text(
        "spatial_dims: 2\nslice_axis: 2\nimages: {table: images.csv, image: image, mask: mask}\n"
    )
    adata = build_cohort(manifest)
    assert validate_cohort(adata, progress=False)["slices"] == 31
    manifest.write_text("slice_axis: 3\n")
    with pytest.raises(ValueError, match="slice_axis"):
        build_cohort(manifest)


def test_plots_show_each_patients_evaluation_slice(stacked_cohort):
    from radiogenomics import pl
    from radiogenomics.pl import _patient_files

    image, mask = _patient_files(stacked_cohort, 7, 2)
    k = evaluation_slice("P007", 5)
    assert image.shape == (3, 16, 16) and mask.shape == (1, 16, 16)
    assert round(float(image[0, 0, 0]) * 1000) == 70 + k
    fig = pl.patients(stacked_cohort, 4, seed=0)
    assert len([ax for ax in fig.axes if ax.images]) == 4 * 3  # a grey panel per channel
