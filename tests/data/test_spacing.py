"""Voxel spacing kept from the source files: manifest -> cohort -> h5ad -> synthetic cohort."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from radiogenomics import _keys as K
from radiogenomics.data.cohort import validate_cohort
from radiogenomics.data.h5ad import SyntheticCohort, read_cohort, write_cohort
from radiogenomics.data.io import read_image, save_image
from radiogenomics.data.manifest import build_cohort
from radiogenomics.data.phantom import make_phantom, write_phantom
from radiogenomics.data.spacing import default_spacing, parse_spacing, regrid

SPACING = (0.5, 0.7, 2.0)


def _volume(shape=(8, 7, 6), seed=0):
    rng = np.random.default_rng(seed)
    image = rng.normal(0, 1, (1, *shape)).astype(np.float32)
    mask = np.zeros((1, *shape), np.uint8)
    mask[0, 2:5, 2:5, 1:4] = 1
    return image, mask


def _manifest(tmp_path, spacings: dict, shapes: dict | None = None):
    shapes = shapes or {}
    rows = []
    for pid, spacing in spacings.items():
        image, mask = _volume(shapes.get(pid, (8, 7, 6)))
        save_image(image, tmp_path / "src" / f"{pid}.nii.gz", spacing)
        save_image(mask, tmp_path / "src" / f"{pid}_mask.nii.gz", spacing)
        rows.append({"id": pid, "image": f"{pid}.nii.gz", "mask": f"{pid}_mask.nii.gz"})
    path = tmp_path / "src" / "cohort.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_spacing_survives_build_write_read(tmp_path):
    manifest = _manifest(tmp_path, {"p0": SPACING, "p1": SPACING, "p2": (1.0, 1.0, 3.0)})
    adata = build_cohort(manifest, spatial_dims=3)
    validate_cohort(adata, progress=False)
    assert list(adata.obs[K.SPACING]) == ["0.5,0.7,2", "0.5,0.7,2", "1,1,3"]
    back = read_cohort(write_cohort(adata, tmp_path / "out" / "cohort.h5ad"))
    assert list(back.obs[K.SPACING]) == ["0.5,0.7,2", "0.5,0.7,2", "1,1,3"]
    assert back.uns[K.UNS][K.SPACING] == pytest.approx(SPACING)  # the most common
    # synthetic images made from these patients' masks carry each patient's spacing
    images = np.stack([_volume(seed=i)[0] for i in range(3)])
    masks = np.stack([_volume()[1]] * 3)
    out = read_cohort(SyntheticCohort(back, images, masks).write(tmp_path / "syn", progress=False))
    for pid, want in zip(out.obs_names, [SPACING, SPACING, (1.0, 1.0, 3.0)], strict=True):
        for col in (K.IMAGE, K.MASK):
            path = tmp_path / "syn" / out.obs.loc[pid, col]
            assert read_image(path, 3)[1] == pytest.approx(want)


def test_resized_image_spacing_keeps_the_field_of_view(tmp_path):
    # p1 is 16 voxels along the first axis: on the cohort's 8-voxel grid its voxels are twice as long
    manifest = _manifest(
        tmp_path, {"p0": SPACING, "p1": SPACING, "p2": SPACING}, {"p1": (16, 7, 6)}
    )
    adata = build_cohort(manifest, spatial_dims=3)
    validate_cohort(adata, progress=False)
    assert adata.uns[K.UNS][K.IMAGE_SIZE] == [8, 7, 6]
    assert adata.obs.loc["p1", K.SPACING] == "1,0.7,2"
    # a model on a 4 x 7 x 3 grid: same field of view, coarser voxels
    assert default_spacing(adata, [4, 7, 3]) == pytest.approx([1.0, 0.7, 4.0])
    regrid(adata, [4, 7, 3])
    assert adata.uns[K.UNS][K.IMAGE_SIZE] == [4, 7, 3]
    assert parse_spacing(adata.obs.loc["p0", K.SPACING]) == pytest.approx((1.0, 0.7, 4.0))
    assert parse_spacing(adata.obs.loc["p1", K.SPACING]) == pytest.approx((2.0, 0.7, 4.0))


def test_fully_synthetic_patients_get_the_cohort_default(tmp_path):
    phantom = make_phantom(4, 3, size=8, seed=0, progress=False)
    phantom.adata.uns[K.UNS][K.SPACING] = list(SPACING)  # no per-patient spacing
    path = write_phantom(phantom, tmp_path / "ph", progress=False)
    cohort = read_cohort(path)
    assert cohort.uns[K.UNS][K.SPACING] == pytest.approx(SPACING)
    image = tmp_path / "ph" / cohort.obs[K.IMAGE].iloc[0]
    assert read_image(image, 3)[1] == pytest.approx(SPACING)
    # files without geometry keep the spacing in the h5ad
    npy = read_cohort(write_phantom(phantom, tmp_path / "npy", "npy", progress=False))
    validate_cohort(npy, progress=False)
    assert npy.uns[K.UNS][K.SPACING] == pytest.approx(SPACING)


def test_image_gan_samples_carry_spacing(tmp_path):
    from radiogenomics.config import load_config
    from radiogenomics.models.image_gan import ImageGAN

    phantom = make_phantom(8, 3, size=8, seed=0, progress=False)
    phantom.adata.uns[K.UNS][K.SPACING] = list(SPACING)
    cohort = read_cohort(write_phantom(phantom, tmp_path / "ph", progress=False))
    validate_cohort(cohort, progress=False)
    tiny = ["image.channels=[8,4]", "image.critic_channels=[4,8]", "image.n_hidden=8"]
    cfg = load_config(None, ["data.spatial_dims=3", "data.image_size=[4,4,4]", *tiny])
    model = ImageGAN(cohort, cfg)  # untrained: the spacing does not depend on the weights
    twins = model.generate_for(cohort[:2])
    coarse = (1.0, 1.4, 4.0)  # 8 voxels -> 4: twice the spacing
    assert parse_spacing(twins.adata.obs[K.SPACING].iloc[0]) == pytest.approx(coarse)
    out = read_cohort(twins.write(tmp_path / "twins", progress=False))
    assert read_image(tmp_path / "twins" / out.obs[K.IMAGE].iloc[0], 3)[1] == pytest.approx(coarse)
    synth = model.sample(2, seed=0)
    assert synth.adata.uns[K.UNS][K.SPACING] == pytest.approx(coarse)
    assert K.SPACING not in synth.adata.obs


def test_bad_spacing_text_names_the_patient(tmp_path):
    phantom = make_phantom(2, 2, size=8, seed=0, progress=False)
    phantom.adata.obs[K.SPACING] = ["0.5,0.7", "thick"]
    with pytest.raises(ValueError, match=r"patient 'P\w*1'.*'spacing'.*'thick'"):
        write_phantom(phantom, tmp_path / "ph", progress=False)
    assert parse_spacing("nan") is None and parse_spacing([1, 2]) == (1.0, 2.0)
