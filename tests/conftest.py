"""Shared fixtures: small phantom cohorts in 2D and 3D, written once per session."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
import torch

from radiogenomics.data.h5ad import read_cohort
from radiogenomics.data.phantom import Phantom, make_phantom, write_phantom

# The gene networks are small: on a 2-core runner, intra-op threads cost more in contention
# than they save, and one thread keeps the test timings steady.
torch.set_num_threads(1)


# A joint model small enough to train a few steps in a test (test_joint_gan, test_learned_map).
TINY_JOINT = [
    "model=joint_gan",
    "data.spatial_dims=2",
    "image.channels=[16,8]",
    "image.critic_channels=[8,16]",
    "image.n_noise=8",
    "image.n_code=8",
    "image.n_hidden=32",
    "image.gene_aux_components=4",
    "gene.n_hidden=32",
    "gene.n_noise=8",
    "train.batch_size=8",
    "train.n_critic=1",
    "train.steps=2",
    "train.eval_every=2",
    "train.select_after=0",
    "train.val_fraction=0.3",
]


@pytest.fixture(scope="session", params=[2, 3], ids=["2d", "3d"])
def spatial_dims(request) -> int:
    return request.param


@pytest.fixture(scope="session")
def _phantom(spatial_dims):
    """An in-memory phantom (48 patients, a few unpaired), built once per session; tests get
    their module's own read-only copy (`phantom`)."""
    return make_phantom(
        48, spatial_dims, seed=7, frac_image_only=0.1, frac_expression_only=0.1, progress=False
    )


@pytest.fixture(scope="session")
def _phantom_cohort(_phantom, tmp_path_factory):
    out = tmp_path_factory.mktemp(f"phantom{_phantom.adata.uns['rg']['spatial_dims']}d")
    return read_cohort(write_phantom(_phantom, out, progress=False))


def frozen(adata: ad.AnnData) -> ad.AnnData:
    """A copy of `adata` whose arrays (`X`, `obsm`) cannot be written in place: a model or
    tool that changed its input would fail the test that caught it, not the tests after it."""
    out = adata.copy()
    for array in (out.X, *out.obsm.values()):
        if isinstance(array, np.ndarray):
            array.flags.writeable = False
    return out


@pytest.fixture(scope="module")
def phantom(_phantom) -> Phantom:
    """The session's phantom for the given spatial_dims, this module's own read-only copy."""
    images, masks = _phantom.images.copy(), _phantom.masks.copy()
    images.flags.writeable = masks.flags.writeable = False
    return Phantom(frozen(_phantom.adata), images, masks)


@pytest.fixture(scope="module")
def phantom_cohort(_phantom_cohort) -> ad.AnnData:
    """The same phantom written to disk (h5ad + NIfTI files) and read back, this module's own
    read-only copy."""
    return frozen(_phantom_cohort)


# --------------------------------------------------------------------------------------------
# a cohort of slice stacks (docs/data.md, "Slice stacks")

STACK_SLICES = [1, 2, 3, 4, 3, 1, 2, 5, 3, 2, 4, 1]  # per patient: 31 slices of 12 patients


def write_stacked_cohort(folder, slices=STACK_SLICES, *, size: int = 16, channels: int = 3,
                         n_genes: int = 6, seed: int = 0):  # fmt: skip
    """A small 2D cohort whose image and mask files are NIfTI stacks `(H, W, S, C)` (slice_axis
    2), written into `folder`; returns the path of its validated `cohort.h5ad`.

    Patient i is 'P00i'; its slice s has a disc lesion and the marker `(10 i + s) / 1000` in
    pixel (0, 0) of every channel (read back in [-1, 1] with data.intensity=fixed), so a test
    can tell which patient and slice an image came from. Expression: `n_genes` genes whose
    first one is the patient's number, the rest noise; covariate `sex`."""
    import pandas as pd

    from radiogenomics.data.cohort import make_cohort, validate_cohort
    from radiogenomics.data.h5ad import write_cohort
    from radiogenomics.data.io import save_image

    rng = np.random.default_rng(seed)
    ids = [f"P{i:03d}" for i in range(len(slices))]
    yy, xx = np.mgrid[:size, :size]
    rows = {}
    for i, (pid, n) in enumerate(zip(ids, slices, strict=True)):
        image = rng.uniform(0.2, 0.6, (channels, size, size, n)).astype(np.float32)
        mask = np.zeros((1, size, size, n), np.uint8)
        for s in range(n):
            r = 2 + (i + s) % 4
            disc = (yy - size // 2) ** 2 + (xx - size // 2) ** 2 <= r * r
            mask[0, :, :, s] = disc
            image[:, disc, s] += 0.3
            image[:, 0, 0, s] = (10 * i + s) / 1000
        save_image(image, folder / "images" / f"{pid}.nii.gz")
        save_image(mask, folder / "masks" / f"{pid}.nii.gz")
        rows[pid] = {"image": f"images/{pid}.nii.gz", "mask": f"masks/{pid}.nii.gz",
                     "sex": "F" if i % 2 else "M"}  # fmt: skip
    expression = pd.DataFrame(
        rng.normal(size=(len(ids), n_genes)), index=ids, columns=[f"G{g}" for g in range(n_genes)]
    )
    expression["G0"] = np.arange(len(ids), dtype=float)
    adata = make_cohort(
        expression, pd.DataFrame.from_dict(rows, orient="index"), categorical=["sex"],
        slice_axis=2,
    )  # fmt: skip
    adata.uns["rg"]["root"] = str(folder)
    validate_cohort(adata, progress=False)
    return write_cohort(adata, folder / "cohort.h5ad")


@pytest.fixture(scope="session")
def _stacked_cohort(tmp_path_factory) -> ad.AnnData:
    return read_cohort(write_stacked_cohort(tmp_path_factory.mktemp("stacked")))


@pytest.fixture(scope="module")
def stacked_cohort(_stacked_cohort) -> ad.AnnData:
    """A cohort of slice stacks (`write_stacked_cohort`), this module's own read-only copy."""
    return frozen(_stacked_cohort)
