"""The phantom cohort: paired patients whose genes and lesions share known latent programs.

Each patient has latent gene programs `z` (standard normal, shifted by covariates). Expression
is `mu + scale * (W z + V h + noise)`: `W` is the known loading matrix (a block of genes per
program, mixed signs), `h` are background modules that correlate genes but touch no image.
Six programs drive one lesion phenotype each (through the effects matrix `E`, with a little
cross-talk); two programs drive expression only, as negative controls. The rendered lesion
(2D or 3D, one code path) has size, elongation, margin irregularity, contrast, texture and a
necrotic core set by those phenotypes. The ground-truth map genes x features is `W @ E`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
from scipy import ndimage
from scipy.special import expit
from tqdm.auto import tqdm

from radiogenomics import _keys as K
from radiogenomics.data.cohort import make_cohort
from radiogenomics.data.h5ad import write_patients

log = logging.getLogger(__name__)

FEATURES = ("size", "elongation", "margin", "contrast", "texture", "necrosis")
PROGRAMS = FEATURES + ("immune", "proliferation")  # the last two touch no image
SUBTYPES = ("A", "B", "C")
# Covariate shifts of the programs (rows: subtype A, B, C; columns: PROGRAMS).
SUBTYPE_SHIFT = np.array(
    [
        [0.8, 0.0, 0.0, 0.5, 0.0, -0.5, 0.0, 0.8],
        [0.0, 0.0, 0.8, 0.0, 0.5, 0.8, -0.8, 0.0],
        [-0.8, 0.8, -0.5, 0.0, -0.5, -0.3, 0.8, -0.8],
    ]
)
SEX_SHIFT = {
    "F": np.zeros(len(PROGRAMS)),
    "M": np.eye(len(PROGRAMS))[PROGRAMS.index("immune")] * 0.8,
}
AGE_SHIFT_PER_SD = np.eye(len(PROGRAMS))[PROGRAMS.index("necrosis")] * 0.3
GENES_PER_PROGRAM = 16
N_BACKGROUND_MODULES = 6


@dataclass
class Phantom:
    """A phantom cohort in memory: `images` and `masks` are `(n, 1, *spatial)` arrays."""

    adata: ad.AnnData
    images: np.ndarray
    masks: np.ndarray


def feature_effects() -> np.ndarray:
    """`E` (programs x features): each image program drives its own feature, plus cross-talk."""
    E = np.zeros((len(PROGRAMS), len(FEATURES)))
    E[np.arange(len(FEATURES)), np.arange(len(FEATURES))] = 1.0
    E[FEATURES.index("size"), FEATURES.index("necrosis")] = 0.3  # larger lesions, more necrosis
    E[FEATURES.index("texture"), FEATURES.index("margin")] = -0.2
    return E


def _loadings(n_genes: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Program loadings `W` (genes x programs) and background-module loadings `V`."""
    W = np.zeros((n_genes, len(PROGRAMS)))
    for p in range(len(PROGRAMS)):
        rows = slice(p * GENES_PER_PROGRAM, (p + 1) * GENES_PER_PROGRAM)
        sign = np.where(rng.random(GENES_PER_PROGRAM) < 0.75, 1.0, -1.0)
        W[rows, p] = sign * rng.uniform(0.6, 1.2, GENES_PER_PROGRAM)
    V = np.zeros((n_genes, N_BACKGROUND_MODULES))
    rest = np.arange(len(PROGRAMS) * GENES_PER_PROGRAM, n_genes)
    # Two thirds of the remaining genes fall in background modules, the rest are noise genes.
    modules = np.array_split(rest[: 2 * len(rest) // 3], N_BACKGROUND_MODULES)
    for m, genes in enumerate(modules):
        V[genes, m] = rng.uniform(0.5, 1.0, len(genes)) * np.where(
            rng.random(len(genes)) < 0.8, 1, -1
        )
    return W, V


def _gene_names(n_genes: int) -> list[str]:
    names = []
    for prog in PROGRAMS:
        names += [f"{prog.upper()[:4]}{i + 1}" for i in range(GENES_PER_PROGRAM)]
    names += [f"BG{i + 1}" for i in range(n_genes - len(names))]
    return names


def _sigmoid(x):
    return expit(x)


def phenotype_parameters(features: np.ndarray) -> pd.DataFrame:
    """Physical lesion parameters from standardised feature values (n x 6), each monotone."""
    f = dict(zip(FEATURES, np.asarray(features).T, strict=True))
    return pd.DataFrame(
        {
            "radius": 0.10 + 0.14 * _sigmoid(1.2 * f["size"]),  # fraction of the field (2D)
            "axis_ratio": 1.0 + 1.2 * _sigmoid(1.2 * f["elongation"]),
            "irregularity": 0.4 * _sigmoid(1.5 * f["margin"] - 0.5),
            "contrast": 0.12 + 0.45 * _sigmoid(1.2 * f["contrast"]),
            "texture": 0.01 + 0.16 * _sigmoid(1.2 * f["texture"]),
            "necrosis": 0.75
            * _sigmoid(1.8 * f["necrosis"] - 0.8),  # core radius, fraction of lesion
        }
    )


def render_lesion(params: pd.Series | dict, spatial_dims: int, size: int, rng: np.random.Generator):
    """Render one lesion: returns `(image, mask)` of shape `(size,) * spatial_dims`.

    The lesion is a star-shaped body: a unit ball stretched along a random axis by
    `axis_ratio` (volume kept), with a radial margin perturbation of amplitude `irregularity`
    made of random cosine waves along random directions (the same recipe in 2D and 3D).
    """
    d = spatial_dims
    grid = np.stack(np.meshgrid(*[np.arange(size, dtype=np.float64)] * d, indexing="ij"), axis=-1)
    centre = size / 2 - 0.5 + rng.uniform(-0.06, 0.06, d) * size
    rel = grid - centre  # (*spatial, d)
    rot, _ = np.linalg.qr(rng.standard_normal((d, d)))
    local = rel @ rot  # coordinates in the lesion's frame
    # 3D lesions get a larger share of their smaller grid (32^3), so they keep enough voxels.
    radius = params["radius"] * size * (1.0 if d == 2 else 1.25)
    ratio = params["axis_ratio"]
    axes = np.full(d, radius * ratio ** (-1.0 / d))
    axes[0] = radius * ratio ** ((d - 1.0) / d)
    scaled = local / axes
    rho = np.linalg.norm(scaled, axis=-1)
    unit = scaled / np.maximum(rho, 1e-6)[..., None]
    bump = np.zeros(rho.shape)
    for _ in range(6):
        direction = rng.standard_normal(d)
        direction /= np.linalg.norm(direction)
        freq = rng.uniform(2.5, 5.0)
        bump += np.cos(np.pi * freq * (unit @ direction) + rng.uniform(0, 2 * np.pi))
    bump /= np.sqrt(6 / 2)  # unit variance
    dist = rho / (1.0 + params["irregularity"] * bump)  # <= 1 inside the lesion
    mask = dist <= 1.0
    if mask.sum() < 4:  # a lesion always has a few voxels
        mask = rho <= 1.0
    # Tissue background: a smooth random field; lesion adds contrast, textured, with a dark core.
    background = 0.3 + 0.06 * _unit_field(rng, rho.shape, size / 8)
    inside = _soft_step(1.0 - dist, size)
    core = _soft_step(params["necrosis"] - dist, size) if params["necrosis"] > 0.02 else 0.0
    texture = params["texture"] * _unit_field(rng, rho.shape, 0.8)
    # The necrotic core is dark and smooth; the viable rim carries contrast and texture.
    image = background + inside * (
        (1.0 - 0.85 * core) * params["contrast"] + (1.0 - core) * texture
    )
    image += 0.015 * rng.standard_normal(rho.shape)
    return np.clip(image, 0.0, 1.0).astype(np.float32), mask.astype(np.uint8)


def _soft_step(x, size):
    # A one-voxel-wide edge: x is in lesion-radius units, so scale by the lesion's size in voxels.
    return _sigmoid(x * size / 4.0)


def _unit_field(rng, shape, sigma):
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma, mode="wrap")
    return field / (field.std() + 1e-12)


def make_phantom(
    n: int = 256,
    spatial_dims: int = 2,
    size: int | None = None,
    n_genes: int = 256,
    noise: float = 0.5,
    seed: int = 0,
    frac_image_only: float = 0.0,
    frac_expression_only: float = 0.0,
    progress: bool = True,
) -> Phantom:
    """Generate a phantom cohort in memory; deterministic for a seed.

    The cohort-wide parts (loadings, gene means) depend on the seed only, and patient `i`
    depends on (seed, i) only, so a larger cohort extends a smaller one.
    """
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3; got {spatial_dims}")
    if n_genes < len(PROGRAMS) * GENES_PER_PROGRAM:
        raise ValueError(f"n_genes must be >= {len(PROGRAMS) * GENES_PER_PROGRAM}; got {n_genes}")
    size = size or (64 if spatial_dims == 2 else 32)
    root = np.random.SeedSequence(seed)
    cohort_ss, patients_ss = root.spawn(2)
    crng = np.random.default_rng(cohort_ss)
    W, V = _loadings(n_genes, crng)
    E = feature_effects()
    mu = crng.uniform(4.0, 10.0, n_genes)  # log2-expression-like gene means
    scale = crng.uniform(0.5, 1.5, n_genes)
    prngs = [np.random.default_rng(s) for s in patients_ss.spawn(n)]

    sex = np.array([("F", "M")[r.integers(2)] for r in prngs])
    subtype = np.array([SUBTYPES[r.integers(3)] for r in prngs])
    age = np.array([np.clip(r.normal(60, 10), 25, 90) for r in prngs])
    z = np.stack([r.standard_normal(len(PROGRAMS)) for r in prngs])
    z += SUBTYPE_SHIFT[[SUBTYPES.index(s) for s in subtype]]
    z += np.stack([SEX_SHIFT[s] for s in sex])
    z += ((age - 60) / 10)[:, None] * AGE_SHIFT_PER_SD
    h = np.stack([r.standard_normal(N_BACKGROUND_MODULES) for r in prngs])
    eps = np.stack([r.standard_normal(n_genes) for r in prngs])
    X = mu + scale * (z @ W.T + h @ V.T + noise * eps)
    features = z @ E + 0.2 * np.stack([r.standard_normal(len(FEATURES)) for r in prngs])
    params = phenotype_parameters(features)

    images = np.zeros((n, 1) + (size,) * spatial_dims, np.float32)
    masks = np.zeros((n, 1) + (size,) * spatial_dims, np.uint8)
    for i in tqdm(
        range(n), desc=f"rendering {spatial_dims}D phantom", disable=not progress, leave=False
    ):
        images[i, 0], masks[i, 0] = render_lesion(params.iloc[i], spatial_dims, size, prngs[i])

    ids = [f"PH{i:05d}" for i in range(n)]
    kind = np.array([r.random() for r in prngs])
    image_only = kind < frac_image_only
    expression_only = (kind >= frac_image_only) & (kind < frac_image_only + frac_expression_only)
    obs = pd.DataFrame(
        {
            "sex": pd.Categorical(sex, categories=["F", "M"]),
            "age": age.round(1),
            "subtype": pd.Categorical(subtype, categories=list(SUBTYPES)),
        },
        index=pd.Index(ids, name="patient"),
    )
    expr = pd.DataFrame(X.astype(np.float32), index=ids, columns=_gene_names(n_genes))
    expr = expr[~image_only]
    adata = make_cohort(
        expr,
        obs,
        spatial_dims=spatial_dims,
        categorical=["sex", "subtype"],
        numeric=["age"],
        provenance={"source": "phantom", "seed": seed},
    )
    adata.obs[K.HAS_IMAGE] = ~expression_only
    adata.obs[K.HAS_MASK] = ~expression_only
    adata.obsm[K.PROGRAMS] = pd.DataFrame(z, index=ids, columns=list(PROGRAMS))
    adata.obsm[K.PHENOTYPE] = params.set_index(pd.Index(ids))
    rg = adata.uns[K.UNS]
    rg[K.IMAGE_SIZE] = [size] * spatial_dims
    rg[K.CHANNELS] = 1
    rg[K.PHANTOM] = {
        "programs": list(PROGRAMS),
        "features": list(FEATURES),
        "program_loadings": W.astype(np.float32),  # genes x programs
        "feature_effects": E.astype(np.float32),  # programs x features
        "truth_map": (W @ E).astype(np.float32),  # genes x features
        "background_loadings": V.astype(np.float32),
        "noise": float(noise),
        "seed": int(seed),
    }
    return Phantom(adata, images, masks)


def write_phantom(
    phantom: Phantom,
    out_dir: str | Path,
    image_format: str = "nii.gz",
    progress: bool = True,
    *,
    overwrite: bool = False,
) -> Path:
    """Write the phantom as a cohort: `out_dir/cohort.h5ad` plus `images/` and `masks/` files.
    A non-empty `out_dir` is refused unless `overwrite` (then replaced whole; `write_patients`)."""
    path = write_patients(
        phantom.adata,
        phantom.images,
        phantom.masks,
        out_dir,
        image_format,
        progress,
        desc="writing phantom",
        overwrite=overwrite,
    )
    log.info("wrote phantom cohort %s (%d patients)", path, phantom.adata.n_obs)
    return path
