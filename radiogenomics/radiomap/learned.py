"""The learned radiogenomic map (DESIGN section 5): what a trained generator does to its images
when one genomic variable moves, the image and mask noise and the covariates held fixed (and,
on the default 'direct' route, the other genes and the gene latent too; see `route` below).

- `learned_map`: each gene (or metagene: its genes moved together) is moved by +-delta on the
  model's standardised scale for a set of base patients; the mask and image are regenerated with
  the same noise and measured with the map features (`radiomap.features.image_feature_batch`).
  Same long table as the conventional map (`radiomap.conventional.COLUMNS`).
- `gene_swap`: patients at the low end of a variable take the values of patients at the high
  end (and back), same noise; the standardised feature shift from low to high.
- `impact_maps`: where in the image a variable changes the output, mean |image(+d) - image(-d)|.

Base patients: a JointGAN's own fully synthetic patients (no cohort given), else the expression
of the cohort's patients (an ImageGAN always needs one). Masks come from the model's mask
generator (so genes can move the lesion's shape); a model without one keeps the cohort's masks.

How a variable moves (`route`):
- 'direct': the variable's genes alone, everything else fixed, the gene generator's latent
  too (`joint.use_latent`): what the expression itself does to the image.
- 'generator' (a JointGAN's own patients): the gene noise moves along the gradient A of
  the variable's score (`J^T w`, J the gene generator's Jacobian), delta / |A| long, so the
  variable moves by delta to first order, but at most one noise std (`MAX_NOISE_STEP`; with
  standardised genes |A| is about 1 or less, so at delta 1 the cap usually holds and the move
  is a secant over one noise std). The genes the model co-expresses with the variable and the
  latent move with it, as they do between the model's own patients; effects are per unit of
  the variable's measured (finite) or first-order (autograd) mean change. A joint
  model's image side reads part of a program from the latent (2D phantom demo run: the
  necrosis genes' AUROC for necrosis 0.72 direct, 0.92 here). (Moving the latent alone, by
  the pseudo-inverse of the gene generator's output layer, is ill-conditioned: that layer's
  smallest singular values are ~1e-4 of its largest on the demo run.)
"""

from __future__ import annotations

import contextlib
import functools
import logging
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from scipy import stats
from tqdm.auto import tqdm

from radiogenomics.nn.noise import Noise
from radiogenomics.nn.shape import mask_moments
from radiogenomics.radiomap.conventional import COLUMNS, adjust, metagenes
from radiogenomics.radiomap.features import (
    IMAGE_FEATURES,
    MIN_VOXELS,
    RING_WIDTH,
    image_feature_batch,
)

log = logging.getLogger(__name__)

METHODS = {"finite": "finite-difference", "autograd": "autograd"}
ROUTES = ("direct", "generator")  # how a variable moves: see the module docstring
MAX_NOISE_STEP = 1.0  # generator route: the longest step of the gene noise (its std is 1)
# the map features that are smooth functions of the soft mask and the image (`soft_features`)
AUTOGRAD_FEATURES = ("shape_volume", "shape_axis_ratio", "firstorder_mean", "ring_mean", "contrast")


# --------------------------------------------------------------------------------------------
# the generator and its base patients


@dataclass
class Patients:
    """Base patients and everything held fixed while a genomic variable moves: standardised
    expression `Z` (n, genes), presence flags, the gene latent (or None), fixed masks (a model
    without a mask generator, else None), one `Noise` per draw, and for a JointGAN's own
    patients the gene generator and its inputs (the 'generator' route)."""

    ids: list[str]
    Z: torch.Tensor
    present: torch.Tensor
    latent: torch.Tensor | None
    masks: torch.Tensor | None
    draws: list[Noise]
    # a JointGAN's own patients: the gene generator and its inputs (noise, codes, numeric)
    gene: torch.nn.Module | None = None
    gene_inputs: tuple | None = None


class _Generator:
    """A trained model's image side (`model.image_side`, `nn.image.ImageSide`), as
    `render(patients, Z, draw)` -> (masks, images); its gene generator where the model draws
    expression of its own (`model.gene_generator`)."""

    def __init__(self, model):
        self.side = getattr(model, "image_side", None)
        if self.side is None:
            raise ValueError(
                f"a learned map needs a model that draws images from genes (a JointGAN or an "
                f"ImageGAN); got {model!r}"
            )
        # a model with a gene generator feeds its mask generator the image noise, as it
        # trains; an image model's masks have noise of their own
        self.gene = getattr(model, "gene_generator", None)
        self.mask_noise = "shared" if hasattr(model, "gene_generator") else "own"
        img = model.config.image
        if img.use_background:
            raise ValueError(
                "the model fuses real backgrounds (image.use_background): no learned map"
            )
        if not model.genes or not img.use_genes:
            raise ValueError("the model's images are not conditioned on genes: nothing to map")
        self.genes, self.device = list(model.genes), model.device
        self.size = list(model.meta["image_size"])

    def noise(self, n: int, rng: torch.Generator) -> Noise:
        return Noise.draw(self.side, n, rng, device=self.device, mask=self.mask_noise)

    def render(
        self, P: Patients, Z, draw: int, *, straight_through: bool = False, rows=None,
        latent=None,
    ):  # fmt: skip
        """Masks (hard, or straight-through: hard forward, soft-mask gradient backward, as the
        joint model trains) and images of the base patients (or `rows` of them) with
        expression `Z`, noise draw `draw` and the patients' latent (or `latent`)."""
        rows = slice(None) if rows is None else rows
        if latent is None:
            latent = None if P.latent is None else P.latent[rows]
        code = self.side.code(Z, P.present[rows], latent)
        masks = None if P.masks is None else P.masks[rows]
        out = self.side(code, P.draws[draw].rows(rows), masks, straight_through=straight_through)
        return out.masks, out.images


def base_patients(
    model, adata=None, *, n_patients: int = 64, n_draws: int = 1, seed: int = 0,
    progress: bool = False,
) -> tuple[_Generator, Patients]:  # fmt: skip
    """The generator and its base patients: a JointGAN's `n_patients` fully synthetic patients
    (covariates drawn as `sample` does) when `adata` is None, else up to `n_patients` patients
    of `adata` with expression (and a mask, for a model without mask generator), drawn with
    `seed` and kept in the cohort's order. `n_draws` noise draws per patient."""
    from radiogenomics.data.view import CohortView

    if n_patients < 3 or n_draws < 1:
        raise ValueError(f"need n_patients >= 3 and n_draws >= 1; got {n_patients}, {n_draws}")
    gen = _Generator(model)
    dev, rng = gen.device, torch.Generator().manual_seed(seed)
    sampler = gen.gene
    if adata is None:
        if sampler is None:
            raise ValueError(
                "this model draws no expression of its own: pass a cohort whose expression "
                "the map starts from (--data)"
            )
        obs = model.covariates_for(n_patients, None, seed)
        codes, numeric = (torch.as_tensor(a).to(dev) for a in model.encode_covariates(obs))
        noise = torch.randn(n_patients, model.config.gene.n_noise, generator=rng).to(dev)
        with torch.no_grad():
            Z, lat = sampler(noise, codes, numeric)
        ids, masks = list(obs.index), None
        # the patients' latent moves with their genes; the image side reads it where its
        # encoder takes one (`ImageSide.code`)
        present = torch.ones(n_patients, dtype=torch.bool, device=dev)
        gene = (sampler, (noise, codes, numeric))
    else:
        model.check_cohort(adata)
        view = CohortView(
            adata, genes=gen.genes, covariates=[], log1p=model.config.gene.log1p,
            scaler=model.scaler,
        )  # fmt: skip
        keep = view.has_expression.copy()
        fixed = gen.side.mask is None and gen.side.image.use_mask
        if fixed:
            keep &= view.has_mask
        rows = np.flatnonzero(keep)
        if len(rows) > n_patients:
            rows = np.sort(np.random.default_rng(seed).choice(rows, n_patients, replace=False))
        if len(rows) < 3:
            raise ValueError(
                f"the cohort has {len(rows)} patients with expression"
                + (" and a mask" if fixed else "") + "; a learned map needs >= 3"
            )  # fmt: skip
        Zc, _ = view.tensor(rows)
        Z, ids, lat, gene = Zc.to(dev), [str(i) for i in view.ids[rows]], None, (None, None)
        present = torch.ones(len(rows), dtype=torch.bool, device=dev)
        masks = (
            view.images(rows, model.config.data, progress=progress)[1].to(dev) if fixed else None
        )
    draws = [gen.noise(len(ids), rng) for _ in range(n_draws)]
    return gen, Patients(ids, Z.float(), present, lat, masks, draws, *gene)


def directions(
    P: Patients, genes: list[str], genomic: str = "genes", variables=None, *,
    n_metagenes: int | None = None, metagene_method: str = "hierarchical",
) -> tuple[list[str], torch.Tensor, pd.Series | None]:  # fmt: skip
    """(names, D (variables, genes), membership): how each genomic variable moves the
    expression per unit. A gene moves alone, by one unit of the model's standardised scale; a
    metagene (`conventional.metagenes` on the base patients' expression) moves its genes
    together, each by its std over the base patients, so the metagene's score (the mean of its
    genes' z-scores) moves by one. `variables`: a subset of the names (default all)."""
    if genomic not in ("genes", "metagenes"):
        raise ValueError(f"genomic must be 'genes' or 'metagenes'; got {genomic!r}")
    Zb = P.Z.detach().cpu().double().numpy()
    membership = None
    if genomic == "genes":
        names, D = list(genes), np.eye(len(genes))
    else:
        expr = pd.DataFrame(Zb, index=P.ids, columns=genes)
        scores, membership = metagenes(expr, method=metagene_method, n_metagenes=n_metagenes)
        names, sd = list(scores.columns), Zb.std(axis=0)
        D = np.stack([np.where(membership.to_numpy() == m, sd, 0.0) for m in names])
    if variables is not None:
        variables = [variables] if isinstance(variables, str) else list(variables)
        unknown = [v for v in variables if v not in names]
        if unknown:
            raise ValueError(f"unknown genomic variables {unknown[:10]}; there are {names[:10]}...")
        pick = [names.index(v) for v in variables]
        names, D = variables, D[pick]
    return names, torch.as_tensor(D, dtype=P.Z.dtype, device=P.Z.device), membership


def _features(masks, images, index=None) -> pd.DataFrame:
    return image_feature_batch(images.float().cpu().numpy(), masks.float().cpu().numpy(), index)


def _base_features(gen: _Generator, P: Patients) -> np.ndarray:
    """(n, draws, features) of the unmoved patients."""
    with torch.no_grad():
        out = [_features(*gen.render(P, P.Z, d)).to_numpy() for d in range(len(P.draws))]
    return np.stack(out, axis=1)


def _scale(base: np.ndarray) -> np.ndarray:
    """Each feature's std over the base patients and draws; NaN where it does not vary."""
    sd = np.nanstd(base.reshape(-1, base.shape[-1]), axis=0, ddof=1)
    return np.where(sd > 1e-12, sd, np.nan)


@dataclass
class Prepared:
    """What the three experiments share, built once by `prepare`: the generator, its base
    patients, the variables' names, directions (V, genes) and metagene membership (or None),
    and, on first use, the base patients' features (n, draws, F) and their stds (F,)."""

    gen: _Generator
    P: Patients
    names: list[str]
    D: torch.Tensor
    membership: pd.Series | None
    route: str = "direct"

    @functools.cached_property
    def base(self) -> np.ndarray:
        return _base_features(self.gen, self.P)

    @functools.cached_property
    def sd(self) -> np.ndarray:
        return _scale(self.base)

    @functools.cached_property
    def score(self) -> torch.Tensor:
        """(V, genes): each variable's score as a function of the expression: a gene's value;
        a metagene's mean z-score over its genes (its direction has each gene's std)."""
        nz = self.D != 0
        return torch.where(nz, 1.0 / (self.D * nz.sum(dim=1, keepdim=True)), 0.0)

    @functools.cached_property
    def ascent(self) -> torch.Tensor:
        """(n, V, noise): the gradient of each variable's score with respect to each base
        patient's gene noise (the 'generator' route): forward-mode Jacobian of the scores,
        one pass per noise dimension (fewer than genes)."""
        from torch.func import jacfwd, vmap

        G, (noise, codes, numeric) = self.P.gene, self.P.gene_inputs
        score = self.score.to(noise.dtype)

        def one(z, c, x):
            return score @ G(z[None], c[None], x[None])[0][0]

        with torch.no_grad():  # a function transform: no_grad keeps the parameters out only
            return vmap(jacfwd(one))(noise, codes, numeric).detach()

    def step(self, i: int, delta: float) -> torch.Tensor:
        """(n, noise): the generator route's noise step for variable `i`: along the score's
        gradient A, delta / |A| long (first order: the score moves by delta), at most
        MAX_NOISE_STEP (a patient the model barely varies in the variable would otherwise
        leave the noise distribution; then the move is a secant over one noise std). Zero
        for a patient whose score does not depend on the noise at all."""
        A = self.ascent[:, i]
        norm = A.norm(dim=1, keepdim=True)
        length = torch.clamp(delta / norm.clamp_min(1e-12), max=MAX_NOISE_STEP)
        return torch.where(norm > 1e-6, A / norm.clamp_min(1e-12) * length, 0.0)

    def moved(self, i: int, delta: float):
        """Variable `i` moved by -delta and +delta: `(Z_down, latent_down, Z_up, latent_up,
        change)`, `change` (n,) each patient's change of the variable between the two (2 delta
        on the direct route; measured on the generator route: 2 delta to first order, less
        where the step was capped). latent None: the patients' own."""
        P = self.P
        if self.route == "direct":
            step = delta * self.D[i]
            return P.Z - step, None, P.Z + step, None, torch.full((len(P.Z),), 2.0 * delta)
        step = self.step(i, delta)
        noise, codes, numeric = P.gene_inputs
        with torch.no_grad():
            down, lat_down = P.gene(noise - step, codes, numeric)
            up, lat_up = P.gene(noise + step, codes, numeric)
        keep = P.latent is not None
        change = (up - down) @ self.score[i].to(up.dtype)
        return down, lat_down if keep else None, up, lat_up if keep else None, change


def _per_unit(change: torch.Tensor) -> float:
    """The divisor that turns feature changes into changes per unit of the variable: the
    mean change of the variable (a ratio of means, so a patient whose step moved the variable
    little keeps its weight rather than being blown up); NaN where the variable did not rise
    on average (a model that does not vary it)."""
    mean = float(torch.nanmean(change.float()))
    return mean if mean > 1e-8 else float("nan")


def prepare(
    model, adata=None, *, genomic: str = "genes", variables=None, n_patients: int = 64,
    n_draws: int = 1, n_metagenes: int | None = None, metagene_method: str = "hierarchical",
    route: str = "direct", seed: int = 0, progress: bool = False,
) -> Prepared:  # fmt: skip
    """The generator, base patients and directions `learned_map`, `gene_swap` and
    `impact_maps` work on (see `base_patients` and `directions`), and how a variable moves
    (`route`, module docstring): pass the result as `prepared=` to run several of them on the
    same patients without rebuilding them."""
    if route not in ROUTES:
        raise ValueError(f"route must be one of {list(ROUTES)}; got {route!r}")
    gen, P = base_patients(
        model, adata, n_patients=n_patients, n_draws=n_draws, seed=seed, progress=progress
    )
    if route == "generator" and P.gene is None:
        raise ValueError(
            "route 'generator' moves a JointGAN's own patients through its gene generator: "
            "give no cohort (adata, `map --data`; `tl.learned_map(base='synthetic')`) and a "
            "joint model that draws expression"
        )
    names, D, membership = directions(
        P, gen.genes, genomic, variables, n_metagenes=n_metagenes, metagene_method=metagene_method
    )
    return Prepared(gen, P, names, D, membership, route)


def _prepared(prepared: Prepared | None, route: str | None, *args, **kwargs) -> Prepared:
    """`prepared`, or `prepare(*args, route=route or 'direct', **kwargs)`; a `route` that
    contradicts `prepared`'s is an error (the patients' moves are set when they are prepared)."""
    if prepared is None:
        return prepare(*args, route=route or "direct", **kwargs)
    if route is not None and route != prepared.route:
        raise ValueError(f"route {route!r} given with patients prepared for {prepared.route!r}")
    return prepared


@contextlib.contextmanager
def _quiet():
    # all-NaN slices (a feature no patient has) are expected and become NaN rows
    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


def _rows(name, features, per_patient: np.ndarray, sd: np.ndarray, method: str) -> pd.DataFrame:
    """Long-table rows of one variable: per_patient (n, features) changes, already per unit
    of the variable; effect = their mean over the std; p: two-sided one-sample t-test of the
    same per-patient changes against 0, so effect and p speak of the same mean (a signed-rank
    test speaks of the median: hard masks, where a few patients flip a block of voxels, gave
    a positive mean with a p from a negative majority)."""
    with _quiet():
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


def _dilate(m: torch.Tensor, iterations: int) -> torch.Tensor:
    """Grey dilation of (B, *S) by the cross (scipy's default structure, zero outside), so a
    binary mask dilates exactly as `scipy.ndimage.binary_dilation`; max passes the gradient."""
    for _ in range(iterations):
        out = m
        for ax in range(1, m.ndim):
            pad = [0, 0] * (m.ndim - 1)
            k = 2 * (m.ndim - 1 - ax)
            pad[k] = pad[k + 1] = 1
            p = F.pad(m, pad)
            n = m.shape[ax]
            out = torch.maximum(out, torch.maximum(p.narrow(ax, 0, n), p.narrow(ax, 2, n)))
        m = out
    return m


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
    ring = (_dilate(m, RING_WIDTH) - m).clamp(0, 1)
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
        with _quiet():
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
            with _quiet():
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
        with _quiet():
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


# --------------------------------------------------------------------------------------------
# several trained runs


def combine_maps(tables: list[pd.DataFrame], fdr: str = "benjamini-hochberg") -> pd.DataFrame:
    """One map from the maps (long tables, `COLUMNS`) of independently trained runs of one
    design (`learned_map`, or `gene_swap`, on each): a single GAN fit is one draw of what
    training makes of the data, and which feature it renders less faithfully varies from run
    to run (the README's learned-map table), so the mean over runs is the steadier map.

    effect: the mean of the runs' effects (runs where it is NaN left out). p: Stouffer's
    combination of the runs' tests, each two-sided p turned into a z signed by its effect,
    Z = sum z / sqrt(k), two-sided again; so runs that agree in sign add up and runs that
    disagree cancel; adjusted over the table by `fdr`. n: the patients over all runs. Every
    table must hold the same (genomic, feature) pairs. Stouffer takes the runs' tests as
    independent: so they are for joint runs, each on its own fully synthetic patients; image
    runs mapped from one cohort (`--data`) with one seed share their base patients, and the
    combined p is then too small (n, too, counts such patients once per run)."""
    if not tables:
        raise ValueError("no maps to combine")
    keys = ["genomic", "feature"]
    indexed = [t.set_index(keys) for t in tables]
    first = indexed[0].index
    for i, t in enumerate(indexed[1:], start=2):
        if not t.index.equals(first):
            extra = t.index.difference(first)[:3].tolist()
            missing = first.difference(t.index)[:3].tolist()
            raise ValueError(
                f"map {i} does not hold map 1's (genomic, feature) pairs: only in map {i} "
                f"{extra}, missing from it {missing}; the runs must share genes and features"
            )
    effects = np.stack([t["effect"].to_numpy(np.float64) for t in indexed], axis=1)
    ps = np.stack([t["p"].to_numpy(np.float64) for t in indexed], axis=1)
    with _quiet():
        effect = np.nanmean(effects, axis=1)
    # Stouffer by hand: each run's z = sign(effect) * the normal quantile of p/2, symmetric in
    # the sign (combine_pvalues of one-sided p = 1 - p/2 loses every p below 1e-16 to
    # rounding on the negative side only); a zero effect counts as z = 0
    ok = np.isfinite(effects) & np.isfinite(ps)
    z = np.where(
        ok, np.sign(effects) * stats.norm.isf(np.clip(np.nan_to_num(ps), 1e-300, 1) / 2), 0
    )
    k = ok.sum(axis=1)
    with _quiet():
        p = np.where(k > 0, 2 * stats.norm.sf(np.abs(z.sum(axis=1)) / np.sqrt(k)), np.nan)
    methods = {m for t in tables for m in t["method"].astype(str).unique()}
    out = pd.DataFrame(
        {
            "genomic": first.get_level_values(0),
            "feature": first.get_level_values(1),
            "effect": effect,
            "p": p,
            "p_adj": adjust(p, fdr),
            "method": f"{' / '.join(sorted(methods))}, mean of {len(tables)} runs",
            "n": sum(t["n"].to_numpy() for t in indexed),
        }
    )
    return out[list(COLUMNS)]


# --------------------------------------------------------------------------------------------
# scoring on the phantom


def gene_level(table: pd.DataFrame, membership: pd.Series) -> pd.DataFrame:
    """A metagene map as a gene map: each gene takes its metagene's rows (genes in no metagene
    are left out), so it can be scored against the phantom's gene-level truth."""
    genes = membership[membership != ""]
    parts = []
    for gene, mg in genes.items():
        rows = table[table["genomic"] == mg].copy()
        rows["genomic"] = str(gene)
        parts.append(rows)
    return pd.concat(parts, ignore_index=True) if parts else table.iloc[:0]
