"""Plots. They read a cohort and never modify it; each returns the matplotlib Figure, and
writes it to `save` (PNG, PDF or SVG by the suffix) when given."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np

# Figures are drawn on `Figure` objects, not through pyplot: no backend is chosen here, so
# importing the library never switches a notebook's backend, and it runs headless as it is.
from matplotlib.figure import Figure

from radiogenomics import _keys as K
from radiogenomics._display import channel_names, display_slice, draw_channels, intensity_window
from radiogenomics.data.cohort import covariate_keys, resolve, slice_axis_of
from radiogenomics.data.io import load_image, read_slices

LEARNED_METHODS = ("finite-difference", "autograd", "gene-swap")  # radiomap.learned's


def patients(
    adata: ad.AnnData,
    n: int = 16,
    *,
    images: np.ndarray | None = None,
    masks: np.ndarray | None = None,
    color_by: str | None = None,
    ncols: int = 8,
    window: np.ndarray | None = None,
    seed: int = 0,
    save: str | Path | None = None,
):
    """A grid of patients: image (middle lesion slice in 3D) with the mask outline.

    A multi-channel image (MRI sequences, say) is shown as one grey panel per channel, never
    as false colour; the channels' names come from uns['rg']['channel_names'].

    Parameters
    ----------
    adata
        The cohort (read, not changed).
    n
        How many imaged patients, drawn at random.
    images, masks
        Arrays `(N, C, *spatial)` for the cohort's rows, or None: read from its files.
    color_by
        An obs column shown in each title (default: the first covariate).
    ncols
        Panels per row (a patient of C channels takes C of them).
    window
        `(C, 2)`: each channel's grey levels (vmin, vmax), e.g. from a real set, to show
        another set at the same window. None: a single-channel image is scaled to its own
        range, several channels each to the percentiles (1, 99) of the patients shown.
    seed
        Seed of the draw.
    save
        A file to write the figure to (format by suffix), or None.

    Returns
    -------
    The matplotlib Figure.

    Examples
    --------
    >>> from radiogenomics import pl
    >>> from radiogenomics.data.phantom import make_phantom
    >>> ph = make_phantom(8, 2, progress=False)
    >>> fig = pl.patients(ph.adata, 4, images=ph.images, masks=ph.masks, color_by="subtype")
    >>> len(fig.axes)
    4
    """
    has_image = adata.obs[K.HAS_IMAGE].to_numpy(bool)
    rows = np.flatnonzero(has_image)
    if rows.size == 0:
        raise ValueError("the cohort has no patients with an image to plot")
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(rows, size=min(n, rows.size), replace=False))
    cat, num = covariate_keys(adata)
    color_by = color_by or (cat + num + [None])[0]
    if color_by is not None and color_by not in adata.obs.columns:
        raise ValueError(f"color_by '{color_by}' is not an obs column")
    spatial_dims = int(adata.uns[K.UNS][K.SPATIAL_DIMS])
    shown = []
    for r in rows:
        if images is not None:
            image = images[r]
            mask = masks[r] if masks is not None else None
        else:
            image, mask = _patient_files(adata, r, spatial_dims)
        shown.append(display_slice(image, mask))
    n_channels = shown[0][0].shape[0]
    if window is not None and np.shape(window) != (n_channels, 2):
        raise ValueError(
            f"window must be (channels, 2) = ({n_channels}, 2); got {np.shape(window)}"
        )
    if window is None and n_channels > 1:
        window = intensity_window(np.stack([img for img, _ in shown]))
    names = channel_names(adata, n_channels)
    per_row = max(1, min(ncols // n_channels, rows.size))
    nrows = int(np.ceil(rows.size / per_row))
    fig = Figure(figsize=(1.6 * per_row * n_channels, 1.75 * nrows))
    axes = fig.subplots(nrows, per_row * n_channels, squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for i, (r, (img, msk)) in enumerate(zip(rows, shown, strict=True)):
        row, col = divmod(i, per_row)
        label = adata.obs_names[r]
        if color_by is not None:
            value = adata.obs[color_by].iat[r]
            label += (
                f"\n{color_by}={value:.0f}" if isinstance(value, float) else f"\n{color_by}={value}"
            )
        panels = axes[row, col * n_channels : (col + 1) * n_channels]
        draw_channels(panels, img, msk, window, names, title=label)
    fig.suptitle(
        f"{rows.size} of {int(has_image.sum())} imaged patients ({spatial_dims}D)", fontsize=9
    )
    fig.tight_layout()
    return _finish(fig, save)


def _patient_files(adata: ad.AnnData, r: int, spatial_dims: int):
    """(image, mask or None) of cohort row `r` as files hold them; of a slice stack, the
    patient's evaluation slice (`data.dataset.evaluation_slice`)."""
    from radiogenomics.data.dataset import evaluation_slice  # MONAI: imported when needed

    axis = slice_axis_of(adata)
    paths = [adata.obs[K.IMAGE].iat[r]]
    if adata.obs[K.HAS_MASK].iat[r]:
        paths.append(adata.obs[K.MASK].iat[r])
    if axis is None:
        arrays = [load_image(resolve(adata, p), spatial_dims) for p in paths]
    else:
        stacks = [read_slices(resolve(adata, p), axis)[0] for p in paths]
        k = evaluation_slice(adata.obs_names[r], len(stacks[0]))
        arrays = [stack[k] for stack in stacks]
    return arrays[0], (arrays[1] if len(arrays) > 1 else None)


def truth_map(adata: ad.AnnData, *, save: str | Path | None = None):
    """Heatmap of the phantom's ground-truth map (image-linked genes x lesion features).

    Parameters
    ----------
    adata
        A phantom cohort (`radiogenomics.data.phantom`; read, not changed).
    save
        A file to write the figure to (format by suffix), or None.

    Returns
    -------
    The matplotlib Figure.

    Examples
    --------
    >>> from radiogenomics import pl
    >>> from radiogenomics.data.phantom import make_phantom
    >>> fig = pl.truth_map(make_phantom(4, 2, progress=False).adata)
    >>> fig.axes[0].get_title()
    'ground-truth radiogenomic map'
    """
    phantom = adata.uns.get(K.UNS, {}).get(K.PHANTOM)
    if phantom is None:
        raise ValueError("the cohort has no phantom ground truth (uns['rg']['phantom'])")
    truth = np.asarray(phantom["truth_map"])
    linked = np.flatnonzero(np.abs(truth).sum(axis=1) > 0)
    fig = Figure(figsize=(3.2, max(3.0, 0.045 * linked.size)))
    ax = fig.subplots()
    lim = np.abs(truth).max()
    im = ax.imshow(
        truth[linked], aspect="auto", cmap="RdBu_r", vmin=-lim, vmax=lim, interpolation="nearest"
    )
    ax.set_xticks(
        range(truth.shape[1]), list(phantom["features"]), rotation=60, ha="right", fontsize=7
    )
    step = max(1, linked.size // 24)
    ax.set_yticks(range(0, linked.size, step), adata.var_names[linked][::step], fontsize=5)
    ax.set_title("ground-truth radiogenomic map", fontsize=8)
    fig.colorbar(im, ax=ax, shrink=0.6, label="effect on feature")
    fig.tight_layout()
    return _finish(fig, save)


def _finish(fig, save):
    if save is not None:
        from radiogenomics._atomic import atomic_write

        atomic_write(
            Path(save),
            lambda tmp: fig.savefig(tmp, dpi=150, format=Path(save).suffix.lstrip(".") or "png"),
        )
    return fig


def volcano(
    adata: ad.AnnData, key: str = "rg_de", *, n_labels: int = 10, save: str | Path | None = None
):
    """Volcano plot of `pp.rank_genes`: log2 fold change against -log10 adjusted p-value.

    Selected genes are highlighted, the thresholds (alpha, min |log2 FC|) drawn as dashed lines
    and the `n_labels` selected genes with the smallest adjusted p-value labelled.

    Parameters
    ----------
    adata
        A cohort that `pp.rank_genes` has run on (read, not changed).
    key
        The `key_added` of that run.
    n_labels
        How many selected genes are labelled.
    save
        A file to write the figure to (format by suffix), or None.

    Returns
    -------
    The matplotlib Figure.

    Examples
    --------
    >>> from radiogenomics import pl, pp
    >>> from radiogenomics.data.phantom import make_phantom
    >>> adata = make_phantom(24, 2, progress=False).adata
    >>> pp.rank_genes(adata, "sex", "F", log_base=2)
    >>> fig = pl.volcano(adata)
    >>> fig.axes[0].get_xlabel()
    'log2 fold change'
    """
    cols = [f"{key}_{c}" for c in ("log2fc", "padj", "selected")]
    missing = [c for c in cols if c not in adata.var.columns]
    if missing:
        raise ValueError(
            f"var has no differential-expression columns {missing}; run pp.rank_genes(adata, "
            f"..., key_added='{key}') first"
        )
    params = adata.uns.get(K.UNS, {}).get(key, {})
    alpha, min_lfc = float(params.get("alpha", 0.05)), float(params.get("min_log2fc", 1.0))
    lfc = adata.var[cols[0]].to_numpy(float)
    padj = adata.var[cols[1]].to_numpy(float)
    sel = adata.var[cols[2]].to_numpy(bool)
    tiny = np.finfo(float).tiny  # padj can underflow to 0; keep -log10 finite
    y = -np.log10(np.clip(padj, tiny, 1.0))
    fig = Figure(figsize=(4.2, 3.6))
    ax = fig.subplots()
    ax.scatter(lfc[~sel], y[~sel], s=6, c="0.6", lw=0, label=f"{int((~sel).sum())} not selected")
    ax.scatter(lfc[sel], y[sel], s=9, c="tab:red", lw=0, label=f"{int(sel.sum())} selected")
    ax.axhline(-np.log10(alpha), color="0.3", ls="--", lw=0.7)
    for x in (-min_lfc, min_lfc):
        ax.axvline(x, color="0.3", ls="--", lw=0.7)
    top = np.flatnonzero(sel)[np.argsort(padj[sel], kind="stable")][: max(n_labels, 0)]
    for k, i in enumerate(top):  # staggered, since top genes often share an adjusted p
        ax.annotate(
            adata.var_names[i],
            (lfc[i], y[i]),
            fontsize=6,
            xytext=(2, 2 + 6 * (k % 3)),
            textcoords="offset points",
        )
    ax.set_xlabel("log2 fold change")
    correction = params.get("correction")
    ax.set_ylabel("-log10 adjusted p" + (f" ({correction})" if correction else ""))
    if params:
        ax.set_title(
            f"{params.get('group')} vs {params.get('reference')} ({params.get('test')})",
            fontsize=8,
        )
    ax.legend(fontsize=6, frameon=False)
    fig.tight_layout()
    return _finish(fig, save)


def loss_curves(log: str | Path, *, save: str | Path | None = None):
    r"""Training curves from a run's `log.csv`: losses, the critic's Wasserstein estimate and the
    gradient penalty against the step, and the held-out realism score where it was measured.

    Parameters
    ----------
    log
        The run's `log.csv` (columns step and any of critic, generator, wasserstein, gp,
        val_score).
    save
        A file to write the figure to (format by suffix), or None.

    Returns
    -------
    The matplotlib Figure, one panel per column found.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> from radiogenomics import pl
    >>> log = Path(tempfile.mkdtemp()) / "log.csv"
    >>> _ = log.write_text("step,critic,generator\n1,0.5,-0.2\n2,0.3,-0.1\n")
    >>> [ax.get_title() for ax in pl.loss_curves(log).axes]
    ['critic', 'generator']
    """
    import pandas as pd

    frame = pd.read_csv(log)
    panels = [c for c in ("critic", "generator", "wasserstein", "gp", "val_score") if c in frame]
    if not panels:
        raise ValueError(f"{log} has none of the columns critic, generator, wasserstein, gp")
    fig = Figure(figsize=(3.2 * len(panels), 2.8))
    axes = fig.subplots(1, len(panels), squeeze=False)
    for ax, col in zip(axes[0], panels, strict=True):
        data = frame[["step", col]].dropna()
        ax.plot(data["step"], data[col], lw=1, marker="o" if col == "val_score" else None, ms=3)
        ax.set_title("held-out realism" if col == "val_score" else col)
        ax.set_xlabel("generator step")
    fig.tight_layout()
    return _finish(fig, save)


def map_heatmap(
    table,
    *,
    alpha: float = 0.05,
    max_rows: int = 60,
    save: str | Path | None = None,
):
    """Heatmap of a radiogenomic map: genomic variables x image features, coloured by effect
    (Spearman's rho, Kruskal-Wallis' epsilon-squared, both in [-1, 1]; with Fisher's log odds
    ratios the scale widens to their largest magnitude), a dot on each pair with
    `p_adj < alpha`. `table` is the long table (`radiogenomics.radiomap.conventional`) or its
    stored form (`adata.uns['rg_map']`). With more than `max_rows` genomic variables, the ones
    with the smallest adjusted p values are shown (in the table's order; the largest |effect|
    where no p value exists). The colour range is [-1, 1], or wider when an effect exceeds it
    (a learned map's standardised slopes, `radiomap.learned`).

    Parameters
    ----------
    table
        The map: a long table (genomic, feature, effect, p_adj[, method]) or its stored form
        (`adata.uns['rg_map']`, read, not changed).
    alpha
        Pairs with `p_adj < alpha` get a dot.
    max_rows
        Most genomic variables shown.
    save
        A file to write the figure to (format by suffix), or None.

    Returns
    -------
    The matplotlib Figure.

    Examples
    --------
    >>> import pandas as pd
    >>> from radiogenomics import pl
    >>> table = pd.DataFrame({"genomic": ["MG1", "MG1", "MG2", "MG2"],
    ...                       "feature": ["size", "contrast"] * 2,
    ...                       "effect": [0.8, 0.1, -0.2, 0.6],
    ...                       "p_adj": [0.001, 0.5, 0.3, 0.01]})
    >>> fig = pl.map_heatmap(table)
    >>> [t.get_text() for t in fig.axes[0].get_yticklabels()]
    ['MG1', 'MG2']
    """
    import pandas as pd

    from radiogenomics.radiomap.conventional import effect_matrix, map_from_uns

    table = table if isinstance(table, pd.DataFrame) else map_from_uns(table)
    if table.empty:
        raise ValueError("the map is empty: no (genomic, feature) pair to draw")
    effect = effect_matrix(table, "effect")
    p_adj = effect_matrix(table, "p_adj")
    title = f"radiogenomic map (dots: adjusted p < {alpha:g})"
    n_total = len(effect)
    if n_total > max_rows:
        rank = p_adj.min(axis=1) if p_adj.notna().any().any() else -effect.abs().max(axis=1)
        best = rank.fillna(np.inf).nsmallest(max_rows).index
        keep = [g for g in effect.index if g in set(best)]
        effect, p_adj = effect.loc[keep], p_adj.loc[keep]
        title += f"\n{max_rows} of {n_total} variables: those with the smallest p_adj"
    fisher = (table["method"] == "fisher").any() if "method" in table else False
    n_rows, n_cols = effect.shape
    limit = max(1.0, float(np.nanmax(np.abs(effect.to_numpy(float)), initial=0.0)))
    fig = Figure(figsize=(max(4.0, 0.22 * n_cols + 2.0), max(3.0, 0.16 * n_rows + 1.8)))
    ax = fig.subplots()
    im = ax.imshow(
        effect.to_numpy(float),
        aspect="auto",
        cmap="RdBu_r",
        vmin=-limit,
        vmax=limit,
        interpolation="nearest",
    )
    rows, cols = np.nonzero(p_adj.to_numpy(float) < alpha)
    ax.scatter(cols, rows, s=6, c="black", marker="o", linewidths=0)
    ax.set_xticks(range(n_cols), list(effect.columns), rotation=70, ha="right", fontsize=6)
    ax.set_yticks(range(n_rows), list(effect.index), fontsize=6)
    ax.set_title(title, fontsize=8)
    learned = "method" in table and table["method"].isin(LEARNED_METHODS).any()
    label = (
        "effect (feature std per unit)"
        if learned
        else "effect (rho; epsilon^2; log odds ratio)"
        if fisher
        else "effect (rho; epsilon^2)"
    )
    fig.colorbar(im, ax=ax, shrink=0.6, label=label)
    fig.tight_layout()
    return _finish(fig, save)


def impact_maps(
    maps: np.ndarray, names, *, top_k: int = 16, ncols: int = 4, save: str | Path | None = None
):
    """A grid of spatial gene-impact maps (`radiogenomics.radiomap.learned.impact_maps`:
    variables x *spatial, mean |image(+d) - image(-d)|): the `top_k` variables with the largest
    total impact, one panel each on a shared colour scale; a 3D map shows its central slice
    along the last axis.

    Parameters
    ----------
    maps
        `(variables, *spatial)` with 2 or 3 spatial dims.
    names
        One name per variable.
    top_k
        Most panels drawn.
    ncols
        Panels per row.
    save
        A file to write the figure to (format by suffix), or None.

    Returns
    -------
    The matplotlib Figure.

    Examples
    --------
    >>> import numpy as np
    >>> from radiogenomics import pl
    >>> maps = np.ones((3, 8, 8)) * np.array([3.0, 1.0, 2.0])[:, None, None]
    >>> fig = pl.impact_maps(maps, ["TP53", "EGFR", "IDH1"], top_k=2)
    >>> [ax.get_title() for ax in fig.axes if ax.get_title()]  # the largest impact first
    ['TP53', 'IDH1']
    """
    maps = np.asarray(maps, np.float64)
    if maps.ndim not in (3, 4) or len(maps) != len(names):
        raise ValueError(
            f"maps must be (variables, *spatial) with 2 or 3 spatial dims, one per name; got "
            f"{maps.shape} for {len(names)} names"
        )
    if maps.ndim == 4:
        maps = maps[..., maps.shape[-1] // 2]
    order = np.argsort(-maps.reshape(len(maps), -1).sum(axis=1), kind="stable")[:top_k]
    nrows = -(-len(order) // ncols)
    fig = Figure(figsize=(1.8 * min(ncols, len(order)) + 0.8, 1.8 * nrows + 0.4))
    axes = np.atleast_1d(fig.subplots(nrows, min(ncols, len(order)), squeeze=False)).ravel()
    vmax = float(maps[order].max()) or 1.0
    for ax, i in zip(axes, order, strict=False):
        im = ax.imshow(maps[i], cmap="magma", vmin=0, vmax=vmax, interpolation="nearest")
        ax.set_title(str(names[i]), fontsize=7)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in axes[len(order) :]:
        ax.set_visible(False)
    fig.colorbar(im, ax=list(axes[: len(order)]), shrink=0.6, label="mean |image(+d) - image(-d)|")
    fig.suptitle("where each genomic variable changes the image", fontsize=8)
    return _finish(fig, save)
