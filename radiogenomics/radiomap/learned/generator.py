"""The learned map's generator and base patients: a trained model's image side as
`render(patients, expression, draw)`, the patients whose images are measured (a JointGAN's own
or a cohort's), the directions a genomic variable moves them in, and `Prepared`, what the
estimators (`learned.estimators`) share. How a variable moves: `ROUTES` (the package
docstring)."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from radiogenomics.nn.noise import Noise
from radiogenomics.radiomap.conventional import metagenes
from radiogenomics.radiomap.features import image_feature_batch

ROUTES = ("direct", "generator")  # how a variable moves: see the package docstring
MAX_NOISE_STEP = 1.0  # generator route: the longest step of the gene noise (its std is 1)


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
        self.gene = model.gene_generator if model.draws_expression else None
        self.mask_noise = "shared" if model.draws_expression else "own"
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
        noise = torch.randn(n_patients, sampler.noise_features, generator=rng).to(dev)
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
