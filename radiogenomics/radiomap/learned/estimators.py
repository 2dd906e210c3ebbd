"""The learned map's estimators: `learned_map` (finite differences, or autograd through the
generator for the differentiable features), `gene_swap` and `impact_maps`, on the patients
`learned.generator.prepare` makes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from scipy import stats
from tqdm.auto import tqdm

from radiogenomics.nn.shape import dilate, mask_moments
from radiogenomics.radiomap.conventional import COLUMNS, adjust
from radiogenomics.radiomap.features import IMAGE_FEATURES, MIN_VOXELS, RING_WIDTH
from radiogenomics.radiomap.learned.combination import quiet
from radiogenomics.radiomap.learned.generator import (
    Prepared,
    _features,
    _per_unit,
    _prepared,
    prepare,
)

METHODS = {"finite": "finite-difference", "autograd": "autograd"}
# the map features that are smooth functions of the soft mask and the image (`soft_features`)
AUTOGRAD_FEATURES = ("shape_volume", "shape_axis_ratio", "firstorder_mean", "ring_mean", "contrast")


def _rows(name, features, per_patient: np.ndarray, sd: np.ndarray, method: str) -> pd.DataFrame:
    """Long-table rows of one variable: per_patient (n, features) changes, already per unit
    of the variable; effect = their mean over the std; p: two-sided one-sample t-test of the
    same per-patient changes against 0, so effect and p speak of the same mean (a signed-rank
    test speaks of the median: hard masks, where a few patients flip a block of voxels, gave
    a positive mean with a p from a negative majority)."""
    with quiet():
        effect = np.nanmean(per_patient, axis=0) / sd
        p = stats.ttest_1samp(per_patient, 0.0, axis=0, nan_policy="omit").pvalue
        p = np.asarray(p, np.float64)
    n = np.isfinite(per_patient).sum(axis=0)
    p = np.where((n >= 3) & np.isfinite(effect), p, np.nan)
    return pd.DataFrame(
        {
            "genomic": name,
            "feature": list(features),
            "effect": effect,
            "p": p,
            "p_adj": np.nan,
            "method": method,
            "n": n.astype(int),
        }  # fmt: skip
    )


def _finish(parts: list[pd.DataFrame], fdr: str) -> pd.DataFrame:
    table = pd.concat(parts, ignore_index=True)
    table["p_adj"] = adjust(table["p"].to_numpy(), fdr)
    return table[list(COLUMNS)]


# --------------------------------------------------------------------------------------------
# differentiable features


def soft_features(images: torch.Tensor, masks: torch.Tensor) -> dict[str, torch.Tensor]:
    """`AUTOGRAD_FEATURES` of a batch as differentiable functions of the images and the masks
    (each (B,)); on binary masks they equal `image_features`' values: area (voxel count), axis
    ratio (from the mask-weighted coordinate covariance), mean grey level in the lesion and in
    the ring `RING_WIDTH` voxels around it, and lesion minus ring. NaN where `image_features`
    has none (fewer than `MIN_VOXELS` lesion or ring voxels)."""
    grey, m = images.mean(dim=1), masks[:, 0].to(images.dtype)
    dims = tuple(range(1, m.ndim))
    area = m.sum(dims)
    mean = (grey * m).sum(dims) / area.clamp_min(1e-6)
    ring = (dilate(m[:, None], RING_WIDTH, cross=True)[:, 0] - m).clamp(0, 1)
    ring_n = ring.sum(dims)
    ring_mean = (grey * ring).sum(dims) / ring_n.clamp_min(1e-6)
    cov = mask_moments(m)[2]
    eig = torch.linalg.eigvalsh(cov)
    ratio = torch.sqrt(eig[:, -1] / eig[:, 0].clamp_min(1e-12))
    nan = torch.full_like(area, float("nan"))
    shape_ok, ring_ok = area >= MIN_VOXELS - 1e-6, ring_n >= MIN_VOXELS - 1e-6
    return {
        "shape_volume": torch.where(shape_ok, area, nan),
        "shape_axis_ratio": torch.where(shape_ok & (eig[:, 0] > 0), ratio, nan),
        "firstorder_mean": torch.where(area > 0.5, mean, nan),
        "ring_mean": torch.where(ring_ok, ring_mean, nan),
        "contrast": torch.where(ring_ok & (area > 0.5), mean - ring_mean, nan),
    }


def _gradients(S: Prepared, draw: int, delta: float) -> np.ndarray:
    """(n, variables, AUTOGRAD_FEATURES) derivatives of each feature per unit of each
    variable, one backward per feature for all variables at once: along the directions D
    (direct route), or through the gene noise along each variable's steps (`Prepared.step`),
    each patient's directional derivative over the variable's mean first-order change, as
    the finite differences divide by the mean measured change (generator route)."""
    gen, P = S.gen, S.P
    with torch.enable_grad():
        if S.route == "direct":
            x = Z = P.Z.detach().clone().requires_grad_(True)
            latent = None
            per_unit = S.D.T  # (genes, V)
        else:
            noise, codes, numeric = P.gene_inputs
            x = noise.detach().clone().requires_grad_(True)
            Z, latent = P.gene(x, codes, numeric)
            latent = latent if P.latent is not None else None
            steps = torch.stack([S.step(i, delta) for i in range(len(S.names))], dim=1)
            change = (S.ascent * steps).sum(dim=-1)  # (n, V), first order
            scale = torch.tensor([_per_unit(c) for c in change.T], dtype=steps.dtype)
            per_unit = steps / scale.to(steps.device)[None, :, None]
        masks, images = gen.render(P, Z, draw, straight_through=True, latent=latent)
        feats = soft_features(images.float(), masks.float())
        out = []
        for name in AUTOGRAD_FEATURES:
            f = feats[name]
            ok = torch.isfinite(f)
            (g,) = torch.autograd.grad(torch.where(ok, f, 0).sum(), x, retain_graph=True)
            d = g @ per_unit if S.route == "direct" else torch.einsum("bk,bvk->bv", g, per_unit)
            out.append(torch.where(ok[:, None], d, float("nan")))
    return torch.stack(out, dim=-1).detach().cpu().numpy()


# --------------------------------------------------------------------------------------------
# the map


def learned_map(
    model, adata=None, *, genomic: str = "genes", variables=None, n_patients: int = 64,
    n_draws: int = 1, delta: float = 1.0, method: str = "finite", route: str | None = None,
    n_metagenes: int | None = None, metagene_method: str = "hierarchical",
    fdr: str = "benjamini-hochberg", seed: int = 0, progress: bool = False,
    return_membership: bool = False, prepared: Prepared | None = None,
):  # fmt: skip
    """The learned map of a trained JointGAN or ImageGAN: the long table of
    `radiomap.conventional.COLUMNS`, one row per (genomic variable, feature).

    Base patients and noise draws: `base_patients`; variables: `directions`; how a variable
    moves: `route` (module docstring; 'generator' needs a JointGAN's own patients; None:
    `prepared`'s, else 'direct').
    effect: the mean over patients and draws of the feature's change per unit of the variable,
    over the feature's std over the base patients (a standardised slope, comparable across
    features). p: two-sided one-sample t-test of the per-patient changes (means over draws)
    against 0, adjusted over the table by `fdr`; `n` counts the patients with a change.

    method 'finite' ('finite-difference'): central differences (f(+delta) - f(-delta)) /
    (2 delta) of every map feature (`IMAGE_FEATURES`) on the hard masks (thresholded at 0.5)
    and images the model samples, so what a user of the samples sees (generator route: over
    the variable's mean measured change between the two, a ratio of means). method
    'autograd': the derivative through the generator, for `AUTOGRAD_FEATURES` only (shape_volume,
    shape_axis_ratio, firstorder_mean, ring_mean, contrast; `soft_features`): hard masks forward
    and the soft mask's gradient backward (straight-through, as the joint model trains), one
    backward per feature. It is exact for what the genes do through the image generator's code
    and for the area; where a gene moves the lesion's edge, intensity features (lesion and ring
    means) take the soft mask's linearisation, which counts edge pixels as partly lesion and
    partly ring, so they can differ from finite differences (`tests/test_learned_map.py`
    measures both). With `return_membership`, also each gene's metagene (or None).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {list(METHODS)}; got {method!r}")
    if not delta > 0:
        raise ValueError(f"delta must be > 0; got {delta}")
    S = _prepared(
        prepared, route, model, adata, genomic=genomic, variables=variables,
        n_patients=n_patients, n_draws=n_draws, n_metagenes=n_metagenes,
        metagene_method=metagene_method, seed=seed, progress=progress,
    )  # fmt: skip
    gen, P, names, membership, sd = S.gen, S.P, S.names, S.membership, S.sd
    n_draws = len(P.draws)
    label = METHODS[method] + ("" if S.route == "direct" else ", generator route")
    if method == "autograd":
        cols = [IMAGE_FEATURES.index(f) for f in AUTOGRAD_FEATURES]
        grads = np.stack([_gradients(S, d, delta) for d in range(n_draws)])  # draws, n, V, F
        with quiet():
            per = np.nanmean(grads, axis=0)
        parts = [
            _rows(v, AUTOGRAD_FEATURES, per[:, i], sd[cols], label) for i, v in enumerate(names)
        ]
    else:
        parts = []
        for i, v in enumerate(tqdm(names, desc="learned map", disable=not progress)):
            Z_down, lat_down, Z_up, lat_up, change = S.moved(i, delta)
            diffs = []
            with torch.no_grad():
                for d in range(n_draws):
                    up = _features(*gen.render(P, Z_up, d, latent=lat_up)).to_numpy()
                    down = _features(*gen.render(P, Z_down, d, latent=lat_down)).to_numpy()
                    diffs.append(up - down)
            with quiet():
                per = np.nanmean(np.stack(diffs), axis=0) / _per_unit(change)
            parts.append(_rows(v, IMAGE_FEATURES, per, sd, label))
    table = _finish(parts, fdr)
    return (table, membership) if return_membership else table


def gene_swap(
    model, adata=None, *, genomic: str = "genes", variables=None, n_patients: int = 64,
    n_draws: int = 1, quantile: float = 0.25,
    n_metagenes: int | None = None, metagene_method: str = "hierarchical",
    fdr: str = "benjamini-hochberg", seed: int = 0, progress: bool = False,
    prepared: Prepared | None = None,
) -> pd.DataFrame:  # fmt: skip
    """Gene swap: for each variable, the `quantile` of base patients lowest in it take the
    values of those highest in it (the lowest the highest's, in rank order) and back, noise
    and every other gene fixed (a metagene swaps all its genes). effect: the mean feature change
    from the low to the high value (a low patient's swapped minus original, a high patient's
    original minus swapped) over the feature's base std; p: one-sample t-test over those
    patients; method 'gene-swap'. Same columns as `learned_map`; every map feature. Always
    the direct route (it swaps expression values; the latent stays), whatever `prepared`'s."""
    if not 0 < quantile <= 0.5:
        raise ValueError(f"quantile must be in (0, 0.5]; got {quantile}")
    S = prepared or prepare(
        model, adata, genomic=genomic, variables=variables, n_patients=n_patients,
        n_draws=n_draws, n_metagenes=n_metagenes, metagene_method=metagene_method, seed=seed,
        progress=progress,
    )  # fmt: skip
    gen, P, names, D, base, sd = S.gen, S.P, S.names, S.D, S.base, S.sd
    n_draws = len(P.draws)
    k = max(1, int(quantile * len(P.ids)))
    parts = []
    for i, v in enumerate(tqdm(names, desc="gene swap", disable=not progress)):
        members = D[i] != 0
        score = (P.Z[:, members] / D[i, members]).mean(dim=1)  # the variable's z-score
        order = torch.argsort(score).cpu()
        low, high = order[:k], order.flip(0)[:k]
        rows = torch.cat([low, high]).to(P.Z.device)
        Z = P.Z[rows].clone()
        Z[:, members] = P.Z[torch.cat([high, low]).to(P.Z.device)][:, members]
        sign = np.r_[np.ones(k), -np.ones(k)][:, None]
        shifts = []
        with torch.no_grad():
            for d in range(n_draws):
                swapped = _features(*gen.render(P, Z, d, rows=rows)).to_numpy()
                shifts.append(sign * (swapped - base[rows.cpu().numpy(), d]))
        with quiet():
            per = np.nanmean(np.stack(shifts), axis=0)
        parts.append(_rows(v, IMAGE_FEATURES, per, sd, "gene-swap"))
    return _finish(parts, fdr)


def impact_maps(
    model, adata=None, *, genomic: str = "genes", variables=None, n_patients: int = 64,
    n_draws: int = 1, delta: float = 1.0, route: str | None = None,
    n_metagenes: int | None = None, metagene_method: str = "hierarchical", seed: int = 0,
    progress: bool = False, prepared: Prepared | None = None,
) -> tuple[np.ndarray, list[str]]:  # fmt: skip
    """Spatial gene-impact maps: for each variable, the mean over base patients and draws of
    |image(+delta) - image(-delta)| per voxel (channels averaged), (variables, *spatial), and
    the variables' names; the variable moves by `route` (on the generator route, scaled to a
    change of 2 delta in the variable; NaN for a variable the model does not vary). Exactly
    zero where the generator ignores the variable."""
    S = _prepared(
        prepared, route, model, adata, genomic=genomic, variables=variables,
        n_patients=n_patients, n_draws=n_draws, n_metagenes=n_metagenes,
        metagene_method=metagene_method, seed=seed, progress=progress,
    )  # fmt: skip
    gen, P, names = S.gen, S.P, S.names
    out = torch.zeros(len(names), *gen.size, device=P.Z.device)
    with torch.no_grad():
        for i in tqdm(range(len(names)), desc="impact maps", disable=not progress):
            Z_down, lat_down, Z_up, lat_up, change = S.moved(i, delta)
            # per 2 delta of the variable, as the direct route moves it (the generator
            # route's capped steps can move it less)
            scale = 2 * delta / _per_unit(change)
            for d in range(len(P.draws)):
                up = gen.render(P, Z_up, d, latent=lat_up)[1].float().mean(dim=1)
                down = gen.render(P, Z_down, d, latent=lat_down)[1].float().mean(dim=1)
                out[i] += scale * (up - down).abs().mean(dim=0)
    return (out / len(P.draws)).cpu().numpy(), names
