"""The report's radiomic features beside an IBSI-compliant implementation (MIRP).

`radiomic_features` (first-order, shape, GLCM; `radiogenomics.radiomap.features`) are IBSI-style
but computed with scikit-image and scipy. `ibsi_comparison` computes the same lesions with MIRP
(Zwanenburg et al., IBSI-compliant; the optional `ibsi` extra: `pip install -e ".[ibsi]"`) set
up as the report is, and lists each report feature beside its IBSI counterpart
(`IBSI_COUNTERPARTS`), so the features the report's Fréchet radiomic distance is made of can be
read against the field's definitions. `tests/radiomap/test_ibsi.py` checks the agreement.

Settings (`MIRP_SETTINGS`), fixed as IBSI asks, chosen to reproduce the report's:
- intensities in [-1, 1] (the cohort loader's scale), re-segmentation range [-1, 1], fixed bin
  size 2/32 from -1: the report's 32 levels; a voxel at exactly 1.0 is moved 1e-12 below it,
  since IBSI's floor((x + 1) / w) + 1 would give it a 33rd level where the report clips it into
  the 32nd;
- GLCM at distance 1, symmetric, the 4 in-plane directions of the first two spatial axes, one
  matrix per direction merged over the slices along the last spatial axis, features averaged
  over directions (IBSI's 2.5D direction merge; for one slice the same as 2D averaging);
- voxel spacing 1, no resampling, channels averaged into one grey image (as the report does).

MIRP's morphology is IBSI's, defined in 3D only: on a 2D lesion it measures a one-voxel-thick
slab, so in 2D only the voxel-count area and the PCA elongation have a counterpart.
"""

from __future__ import annotations

import contextlib
import logging
import re
import warnings
from typing import NamedTuple

import numpy as np
import pandas as pd

from radiogenomics.radiomap.definitions import N_LEVELS, RADIOMIC_FEATURES

EXTRA = "ibsi"
BIN_WIDTH = 2.0 / N_LEVELS
MIRP_SETTINGS = {
    "base_feature_families": ["morphology", "statistics", "intensity_histogram", "glcm"],
    "base_discretisation_method": "fixed_bin_size",
    "base_discretisation_bin_width": BIN_WIDTH,
    "resegmentation_intensity_range": [-1.0, 1.0],
    "glcm_distance": 1.0,
    "glcm_spatial_method": "2.5d_direction_merge",
    "stat_percentile": [10.0, 90.0],
}
_TOP = 1.0 - 1e-12  # see the module docstring: the report clips 1.0 into the top level


class Counterpart(NamedTuple):
    """A report feature's IBSI counterpart: MIRP's name, the transform that puts the report's
    value on IBSI's scale (`identity` or `square`), the spatial dims in which the two
    definitions are the same, and a note (how they differ, or what is worth knowing)."""

    ibsi: str
    transform: str
    same_in: tuple[int, ...]
    note: str


IBSI_COUNTERPARTS: dict[str, Counterpart] = {
    "firstorder_mean": Counterpart("stat_mean", "identity", (2, 3), ""),
    "firstorder_std": Counterpart(
        "stat_var", "square", (2, 3), "IBSI's variance is the report's std squared"
    ),
    "firstorder_skewness": Counterpart("stat_skew", "identity", (2, 3), ""),
    "firstorder_kurtosis": Counterpart("stat_kurt", "identity", (2, 3), "both excess kurtosis"),
    "firstorder_p10": Counterpart("stat_p10", "identity", (2, 3), ""),
    "firstorder_p90": Counterpart("stat_p90", "identity", (2, 3), ""),
    "firstorder_entropy": Counterpart("ih_entropy", "identity", (2, 3), "log2, the same 32 bins"),
    "firstorder_energy": Counterpart("stat_energy", "identity", (2, 3), ""),
    "firstorder_range": Counterpart("stat_range", "identity", (2, 3), ""),
    "shape_volume": Counterpart(
        "morph_vol_approx",
        "identity",
        (2, 3),
        "voxel count (IBSI's mesh volume `morph_volume` is about half a voxel layer smaller)",
    ),
    "shape_surface": Counterpart(
        "morph_area_mesh",
        "identity",
        (3,),
        "both marching-cubes meshes (MIRP's area in float32)",
    ),
    "shape_surface_volume_ratio": Counterpart(
        "morph_av", "identity", (), "over the voxel count, IBSI over the mesh volume"
    ),
    "shape_sphericity": Counterpart(
        "morph_sphericity", "identity", (), "the voxel count where IBSI takes the mesh volume"
    ),
    "shape_elongation": Counterpart(
        "morph_pca_elongation",
        "identity",
        (2, 3),
        "sqrt of the second over the largest eigenvalue of the voxel-coordinate covariance",
    ),
    "shape_solidity": Counterpart(
        "morph_vol_dens_conv_hull",
        "identity",
        (),
        "voxel count over the hull of the voxels' corners, IBSI's mesh volume over the mesh's hull",
    ),
    "glcm_contrast": Counterpart("cm_contrast", "identity", (2, 3), ""),
    "glcm_homogeneity": Counterpart(
        "cm_inv_diff_mom", "identity", (2, 3), "IBSI's inverse difference moment"
    ),
    "glcm_energy": Counterpart(
        "cm_energy",
        "square",
        (2, 3),
        "the report averages sqrt(ASM) over directions, IBSI the ASM: the report's squared "
        "is at most IBSI's",
    ),
    "glcm_correlation": Counterpart("cm_corr", "identity", (2, 3), ""),
    "glcm_dissimilarity": Counterpart(
        "cm_dissimilarity", "identity", (2, 3), "IBSI's difference average"
    ),
}
# IBSI's morphology is 3D: on one slice MIRP measures a slab, no counterpart of these in 2D
# (the report's 2D surface is skimage's perimeter, its sphericity the circularity 4 pi A / P^2)
THREE_D_ONLY = ("shape_surface", "shape_surface_volume_ratio", "shape_sphericity")
NO_2D = "no IBSI counterpart in 2D: IBSI's morphology is 3D"
COLUMNS = (
    "lesion", "feature", "ibsi_feature", "report", "report_on_ibsi_scale", "ibsi", "rel_diff",
    "same_definition", "note",
)  # fmt: skip


def _mirp():
    try:
        import mirp
    except ImportError as err:
        raise ImportError(
            f'radiomap.ibsi needs MIRP, the optional `{EXTRA}` extra: pip install -e ".[{EXTRA}]"'
        ) from err
    return mirp


@contextlib.contextmanager
def _without_spatial_autocorrelation():
    """MIRP without Moran's I and Geary's C: the report has no counterpart of them, and MIRP
    sums them over voxel pairs in Python (about 20 s for a lesion of 5000 pixels, against 0.3 s
    for every other feature). MIRP offers no public switch for single features, so its
    morphology table is wrapped for the duration; where that private name is gone (a later
    MIRP), the features are computed as they are, only slower."""
    try:
        from mirp._features import morph_3d_features as morph
    except ImportError:
        morph = None
    table = getattr(morph, "get_morphology_3d_class_dict", None)
    if table is None:
        yield
        return

    def lean():
        return {k: v for k, v in table().items() if k not in ("morph_moran_i", "morph_geary_c")}

    morph.get_morphology_3d_class_dict = lean
    try:
        yield
    finally:
        morph.get_morphology_3d_class_dict = table


def _numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor, without importing torch here
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _short(name: str) -> str:
    """MIRP's feature name without its settings suffix (`cm_corr_d1_2.5d_dir_merge_fbs_w0.0625`
    -> `cm_corr`, `ih_entropy_fbs_w0.0625` -> `ih_entropy`)."""
    return re.sub(r"_(d1|fbs)_.*$", "", name)


def mirp_features(images, masks) -> pd.DataFrame:
    """MIRP's IBSI features (`MIRP_SETTINGS`) of a batch: images `(N, C, *spatial)` in [-1, 1],
    masks `(N, 1, *spatial)`; one row per lesion, columns MIRP's feature names without their
    settings suffix. Channels are averaged; MIRP's slice axis is the last spatial axis."""
    mirp = _mirp()
    images, masks = _numpy(images).astype(np.float64), _numpy(masks) > 0.5
    if images.ndim not in (4, 5) or masks.shape != (len(images), 1, *images.shape[2:]):
        raise ValueError(
            f"images must be (N, C, *spatial) and masks (N, 1, *spatial) alike; got "
            f"{images.shape} and {masks.shape}"
        )
    grey = images.mean(axis=1)
    outside = np.flatnonzero((np.abs(grey) > 1 + 1e-6).reshape(len(grey), -1).any(axis=1))
    if outside.size:
        raise ValueError(f"images {outside.tolist()} leave [-1, 1], the range IBSI bins here")
    empty = np.flatnonzero(~masks.reshape(len(masks), -1).any(axis=1))
    if empty.size:
        raise ValueError(f"masks {empty.tolist()} are empty")
    grey = np.clip(grey, -1.0, _TOP)
    # MIRP's arrays are (z, y, x): z is the report's last spatial axis (its GLCM's slice axis)
    if grey.ndim == 3:
        volumes, labels = list(grey[:, None]), list(masks[:, 0, None].astype(np.uint8))
    else:
        volumes = list(np.moveaxis(grey, -1, 1))
        labels = list(np.moveaxis(masks[:, 0], -1, 1).astype(np.uint8))
    logging.disable(logging.INFO)  # MIRP logs every image at INFO
    try:
        with _without_spatial_autocorrelation(), warnings.catch_warnings():
            # MIRP advises fixed bin size for uncalibrated images: that is what is set
            warnings.filterwarnings("ignore", message=".*do not represent calibrated values")
            # features not compared here (a slab's enclosing ellipsoid) take empty means
            warnings.filterwarnings(
                "ignore", message="Mean of empty slice", category=RuntimeWarning
            )
            tables = mirp.extract_features(
                image=volumes, mask=labels, by_slice=grey.ndim == 3, **MIRP_SETTINGS
            )
    finally:
        logging.disable(logging.NOTSET)
    rows = [t.iloc[0] for t in tables]
    out = pd.DataFrame(rows).reset_index(drop=True)
    keep = [c for c in out.columns if c.split("_")[0] in ("morph", "stat", "ih", "cm")]
    return out[keep].rename(columns=_short).astype(np.float64)


def ibsi_comparison(images, masks, index=None) -> pd.DataFrame:
    """The report's radiomic features beside MIRP's IBSI counterparts, one row per lesion and
    feature (columns `COLUMNS`): `report` is `radiomic_features` (through the report's batched
    path), `report_on_ibsi_scale` the same value on IBSI's definition where that is a
    transform (std -> variance, mean sqrt(ASM) -> ASM), `rel_diff` = |report_on_ibsi_scale -
    ibsi| / |ibsi|, `same_definition` whether the two measure the same thing (`note`: how they
    differ otherwise). Inputs as `mirp_features`; `index` names the lesions (default 0..N-1)."""
    from radiogenomics.radiomap.features import image_feature_batch

    images, masks = _numpy(images), _numpy(masks)
    theirs = mirp_features(images, masks)
    ours = image_feature_batch(images, masks)[list(RADIOMIC_FEATURES)].reset_index(drop=True)
    names = list(range(len(ours))) if index is None else list(index)
    dims = images.ndim - 2
    rows = []
    for feature, (ibsi_name, transform, same_in, note) in IBSI_COUNTERPARTS.items():
        report = ours[feature].to_numpy()
        scaled = report**2 if transform == "square" else report
        ibsi = theirs[ibsi_name].to_numpy()
        if dims == 2 and feature in THREE_D_ONLY:
            ibsi, note = np.full(len(ibsi), np.nan), NO_2D
        with np.errstate(invalid="ignore", divide="ignore"):
            rel = np.abs(scaled - ibsi) / np.abs(ibsi)
        for k, name in enumerate(names):
            same = dims in same_in
            rows.append(
                (name, feature, ibsi_name, report[k], scaled[k], ibsi[k], rel[k], same, note)
            )
    return pd.DataFrame(rows, columns=list(COLUMNS))


def agreement(table: pd.DataFrame) -> pd.DataFrame:
    """One row per report feature of an `ibsi_comparison` table: its IBSI counterpart, whether
    the definitions are the same, the largest and median `rel_diff` over the lesions, and the
    Spearman correlation of the report's values with IBSI's across the lesions (NaN with
    fewer than 3 lesions or no counterpart)."""
    from scipy.stats import spearmanr

    rows = {}
    for feature, g in table.groupby("feature", sort=False):
        ok = g["ibsi"].notna() & g["report"].notna()
        rho = np.nan
        if ok.sum() >= 3 and g.loc[ok, "ibsi"].nunique() > 1 and g.loc[ok, "report"].nunique() > 1:
            rho = float(spearmanr(g.loc[ok, "report"], g.loc[ok, "ibsi"]).statistic)
        rows[feature] = {
            "ibsi_feature": g["ibsi_feature"].iloc[0],
            "same_definition": bool(g["same_definition"].iloc[0]),
            "max_rel_diff": g["rel_diff"].max(),
            "median_rel_diff": g["rel_diff"].median(),
            "spearman": rho,
            "note": g["note"].iloc[0],
        }
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("feature")
