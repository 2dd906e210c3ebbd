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
