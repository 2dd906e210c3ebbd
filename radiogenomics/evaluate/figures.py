"""Figures for the gene evaluation and a Markdown report that shows them.

Each figure takes real and synthetic `(samples, genes)` arrays (synthetic as a dict name -> array),
returns the matplotlib Figure and, with `save=`, writes it as a PNG atomically.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure  # no pyplot: see radiogenomics.pl
from scipy.cluster.hierarchy import dendrogram, leaves_list, linkage
from scipy.spatial.distance import squareform

from radiogenomics._atomic import atomic_write, atomic_write_text
from radiogenomics._display import display_slice, draw_channels, intensity_window
from radiogenomics.evaluate.genes import _matrix, gene_distance

log = logging.getLogger(__name__)
DPI = 120


def _save(fig, save: str | Path | None, dpi: int = DPI):
    if save is not None:
        atomic_write(save, lambda tmp: fig.savefig(tmp, format="png", dpi=dpi))
        log.info("wrote %s", save)
    return fig


def _inputs(real, synthetic: Mapping, genes) -> tuple[np.ndarray, dict, np.ndarray]:
    real = _matrix(real, "real")
    if not isinstance(synthetic, Mapping):
        raise ValueError(f"synthetic must be a dict name -> array; got {type(synthetic).__name__}")
    synthetic = {name: _matrix(X, f"synthetic '{name}'") for name, X in synthetic.items()}
    for name, X in synthetic.items():
        if X.shape[1] != real.shape[1]:
            raise ValueError(
                f"synthetic '{name}' has shape {X.shape}; real has {real.shape[1]} genes"
            )
    genes = np.asarray(range(real.shape[1]) if genes is None else genes).astype(str)
    if genes.size != real.shape[1]:
        raise ValueError(f"{genes.size} gene names for real data of shape {real.shape}")
    return real, synthetic, genes


def _most_variable(real: np.ndarray, n: int) -> np.ndarray:
    """Indices of the `n` most variable genes in real data, in their original order."""
    return np.sort(np.argsort(-real.var(axis=0), kind="stable")[: min(n, real.shape[1])])


def _linkage(X: np.ndarray, method: str = "average") -> np.ndarray:
    return linkage(np.clip(squareform(gene_distance(X), checks=False), 0.0, None), method=method)


def distance_matrices(real, synthetic: Mapping, genes=None, max_genes: int = 200, save=None):
    """Gene-distance heatmaps side by side, genes in the order of the real data's dendrogram.

    Above `max_genes` genes, the most variable ones in the real data are shown.
    """
    real, synthetic, genes = _inputs(real, synthetic, genes)
    keep = _most_variable(real, max_genes)
    order = keep[leaves_list(_linkage(real[:, keep]))]
    panels = {"real": real, **synthetic}
    fig = Figure(figsize=(4 * len(panels) + 1, 4.2))
    axes = fig.subplots(1, len(panels), squeeze=False)
    for ax, (name, X) in zip(axes[0], panels.items(), strict=True):
        im = ax.imshow(gene_distance(X[:, order]), cmap="viridis", vmin=0, vmax=2)
        ax.set_title(name)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8, label="1 - Pearson r")
    fig.suptitle(f"gene-gene distances ({order.size} genes, real dendrogram order)")
    return _save(fig, save)


def dendrograms(real, synthetic: Mapping, genes=None, n_genes: int = 40, save=None):
    """Average-linkage dendrograms of the `n_genes` most variable real genes, real vs each set."""
    real, synthetic, genes = _inputs(real, synthetic, genes)
    keep = _most_variable(real, n_genes)
    if keep.size < 2:
        raise ValueError(f"a dendrogram needs at least 2 genes; got {keep.size}")
    panels = {"real": real, **synthetic}
    width = max(6.0, 0.18 * keep.size)
    fig = Figure(figsize=(width, 2.8 * len(panels)))
    axes = fig.subplots(len(panels), 1, squeeze=False)
    for ax, (name, X) in zip(axes[:, 0], panels.items(), strict=True):
        dendrogram(
            _linkage(X[:, keep]),
            labels=list(genes[keep]),
            ax=ax,
            leaf_rotation=90,
            leaf_font_size=7,
            color_threshold=0,
            above_threshold_color="k",
        )
        ax.set_title(name)
        ax.set_ylabel("1 - Pearson r")
    fig.tight_layout()
    return _save(fig, save)


def gene_distributions(real, synthetic: Mapping, genes=None, n_genes: int = 12, save=None):
    """Histograms of real and synthetic values for the `n_genes` most variable real genes."""
    real, synthetic, genes = _inputs(real, synthetic, genes)
    keep = _most_variable(real, n_genes)
    ncols = min(4, keep.size)
    nrows = int(np.ceil(keep.size / ncols))
    fig = Figure(figsize=(3.2 * ncols, 2.5 * nrows))
    axes = fig.subplots(nrows, ncols, squeeze=False)
    panels = {"real": real, **synthetic}
    # shared bins keep the overlay honest; fewer of them for small sets, so the shape shows
    n_bins = int(np.clip(2 * np.sqrt(min(X.shape[0] for X in panels.values())), 8, 30))
    for ax, g in zip(axes.ravel(), keep, strict=False):
        values = np.concatenate([X[:, g] for X in panels.values()])
        bins = np.linspace(values.min(), values.max(), n_bins + 1)
        for name, X in panels.items():
            ax.hist(X[:, g], bins=bins, density=True, histtype="step", linewidth=1.4, label=name)
        ax.set_title(genes[g], fontsize=9)
        ax.tick_params(labelsize=7)
    for ax in axes.ravel()[keep.size :]:
        ax.axis("off")
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, save)


def embedding(real, synthetic: Mapping, method: str = "pca", seed: int = 0, save=None):
    """2D embedding fitted on real patients, synthetic patients projected into it."""
    real, synthetic, _ = _inputs(real, synthetic, None)
    if method == "pca":
        from sklearn.decomposition import PCA

        model = PCA(n_components=2, random_state=seed).fit(real)
        axis = [f"PC{i + 1} ({r:.0%})" for i, r in enumerate(model.explained_variance_ratio_)]
    elif method == "umap":
        try:
            import umap
        except ImportError as err:
            raise ValueError(
                "method='umap' needs umap-learn: pip install umap-learn (or use method='pca')"
            ) from err
        model = umap.UMAP(n_components=2, random_state=seed, n_jobs=1).fit(real)
        axis = ["UMAP1", "UMAP2"]
    else:
        raise ValueError(f"method must be 'pca' or 'umap'; got {method!r}")
    fig = Figure(figsize=(5.5, 5))
    ax = fig.subplots()
    for name, X in {"real": real, **synthetic}.items():
        xy = model.transform(X)
        ax.scatter(xy[:, 0], xy[:, 1], s=10, alpha=0.6, label=f"{name} ({X.shape[0]})")
    ax.set_xlabel(axis[0])
    ax.set_ylabel(axis[1])
    ax.legend(fontsize=8)
    ax.set_title(f"{method.upper()} fitted on real patients")
    fig.tight_layout()
    return _save(fig, save)


def grouped_bars(table: pd.DataFrame, *, title: str, ylabel: str, ylim=(-1, 1), save=None):
    """One group of bars per row of `table`, one bar per column (e.g. per feature: real and
    synthetic Spearman), with a zero line."""
    fig = Figure(figsize=(max(4.5, 0.9 * len(table) + 2), 3.2))
    ax = fig.subplots()
    x = np.arange(len(table))
    width = 0.8 / max(len(table.columns), 1)
    for j, col in enumerate(table.columns):
        values = pd.to_numeric(table[col], errors="coerce").to_numpy(float)
        ax.bar(x + (j - (len(table.columns) - 1) / 2) * width, values, width, label=str(col))
    ax.axhline(0, color="black", linewidth=0.6)
    ax.set_xticks(x, [str(i) for i in table.index], rotation=30, ha="right", fontsize=8)
    ax.set_ylim(*ylim)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, frameon=False)
    fig.tight_layout()
    return _save(fig, save)


def _cell(value) -> str:
    if isinstance(value, (float, np.floating)):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|")


def markdown_table(df: pd.DataFrame) -> str:
    """A pipe table; tabulate (pandas' to_markdown) is not a dependency, so it is written here."""
    if isinstance(df.columns, pd.MultiIndex):
        df = df.copy()
        df.columns = [" ".join(str(p) for p in c) for c in df.columns]
    header = [str(df.index.name or "")] + [str(c) for c in df.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    for idx, row in df.iterrows():
        lines.append("| " + " | ".join([_cell(idx)] + [_cell(v) for v in row]) + " |")
    return "\n".join(lines)


def write_report(
    results: pd.DataFrame,
    figures: Mapping[str, str | Path],
    out: str | Path,
    title: str,
    tables: Mapping[str, pd.DataFrame] | None = None,
) -> Path:
    """A Markdown report: the metrics table, each of `tables` under its heading, then each
    figure (linked relative to `out`)."""
    out = Path(out)
    parts = [f"# {title}", "", markdown_table(results), ""]
    for name, table in (tables or {}).items():
        parts += [f"## {name}", "", markdown_table(table), ""]
    for name, path in figures.items():
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"figure '{name}' not found: {path}")
        link = os.path.relpath(path.resolve(), out.resolve().parent)
        parts += [f"## {name}", "", f"![{name}]({Path(link).as_posix()})", ""]
    atomic_write_text(out, "\n".join(parts))
    log.info("wrote %s", out)
    return out


def dcr_histograms(distances: Mapping[str, Mapping], aucs: Mapping | None = None, save=None):
    """One panel per record kind: histograms of the synthetic and the held-out patients'
    distances to their closest training record (`evaluate.privacy`), the held-out 5th
    percentile dashed; `aucs` (kind -> membership AUC) goes into the titles."""
    if not distances:
        raise ValueError("no distances to draw")
    fig = Figure(figsize=(3.6 * len(distances), 3.0))
    axes = fig.subplots(1, len(distances), squeeze=False)[0]
    for ax, (kind, d) in zip(axes, distances.items(), strict=True):
        synth, held = np.asarray(d["synthetic"]), np.asarray(d["heldout"])
        top = max(float(np.quantile(np.r_[synth, held], 0.99)), 1e-9)
        bins = np.linspace(0, top, 30)
        ax.hist(np.clip(held, 0, top), bins=bins, density=True, histtype="step", linewidth=1.4,
                label=f"held-out real ({held.size})")  # fmt: skip
        ax.hist(np.clip(synth, 0, top), bins=bins, density=True, histtype="step", linewidth=1.4,
                label=f"synthetic ({synth.size})")  # fmt: skip
        ax.axvline(np.quantile(held, 0.05), color="grey", linestyle="--", linewidth=0.8)
        title = kind if aucs is None else f"{kind}: membership AUC {aucs.get(kind, np.nan):.2f}"
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("distance to closest training record", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0].legend(fontsize=7, frameon=False)
    fig.tight_layout()
    return _save(fig, save)


def effect_scatter(reference: pd.DataFrame, others: Mapping[str, pd.DataFrame], save=None):
    """Each (genomic, feature) pair's effect in the real map `reference` (x) against its effect
    in each map of `others` (y; long tables of `radiomap.conventional`), with the identity
    line; the legend gives each map's rank correlation with the reference."""
    from radiogenomics.radiomap.scoring import rank_correlation

    x = reference.set_index(["genomic", "feature"])["effect"]
    fig = Figure(figsize=(4.6, 4.4))
    ax = fig.subplots()
    for name, table in others.items():
        y = table.set_index(["genomic", "feature"])["effect"]
        a, b = x.align(y, join="inner")
        rho = rank_correlation(reference, table)
        ax.scatter(a, b, s=4, alpha=0.35, linewidths=0, label=f"{name} (rank corr. {rho:.2f})")
    ax.plot([-1, 1], [-1, 1], color="black", linewidth=0.6)
    ax.axhline(0, color="grey", linewidth=0.4)
    ax.axvline(0, color="grey", linewidth=0.4)
    ax.set_xlim(-1, 1)
    ax.set_ylim(-1, 1)
    ax.set_xlabel("effect in the real training map (Spearman)")
    ax.set_ylabel("effect in the other map")
    ax.legend(fontsize=7, frameon=False, markerscale=3)
    fig.tight_layout()
    return _save(fig, save)


def sample_grids(real, real_images, real_masks, synthetic, synthetic_images, synthetic_masks,
                 out: str | Path, *, seed: int = 0):  # fmt: skip
    """`out/real_samples.png` and `out/synthetic_samples.png`: patients of each cohort (their
    images and masks `(N, C, *spatial)`, in the cohort's imaged rows), one grey panel per
    channel at the same window for both, each channel's (1, 99) percentiles over the real
    images: a synthetic image too bright or too flat shows as such. Returns both Figures."""
    from radiogenomics import pl

    real_images, synthetic_images = np.asarray(real_images), np.asarray(synthetic_images)
    window = intensity_window(real_images)
    return tuple(
        pl.patients(
            cohort,
            images=images,
            masks=np.asarray(masks),
            window=window,
            seed=seed,
            save=Path(out) / f"{name}_samples.png",
        )
        for name, cohort, images, masks in (
            ("real", real, real_images, real_masks),
            ("synthetic", synthetic, synthetic_images, synthetic_masks),
        )
    )


def nearest_training_images(scores: Mapping, train_images, synthetic_images, *, masks=None,
                            channel_names=None, n: int = 6, save=None):  # fmt: skip
    """The `n` synthetic images nearest their training image relative to the held-out ones
    (smallest d_train / d_held of `evaluate.memorisation.memorisation_scores`), each beside
    that training image: one grey panel per channel at the training images' window (the
    middle lesion slice in 3D), titles with the distances. `masks`: (training masks,
    synthetic masks) for the outlines, or None."""

    table = scores["images"]
    train_images, synthetic_images = np.asarray(train_images), np.asarray(synthetic_images)
    order = np.argsort(table["ratio"].to_numpy(), kind="stable")[:n]
    window = intensity_window(train_images)
    c = train_images.shape[1]
    names = list(channel_names) if channel_names is not None and c > 1 else None
    fig = Figure(figsize=(1.6 * 2 * c + 0.4, 1.9 * len(order)))
    axes = fig.subplots(len(order), 2 * c, squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for row, i in enumerate(order):
        j = int(scores["nearest_train_rows"][i])
        syn_mask = None if masks is None else np.asarray(masks[1][i])
        train_mask = None if masks is None else np.asarray(masks[0][j])
        rec = table.iloc[i]
        draw_channels(
            axes[row, :c], *display_slice(synthetic_images[i], syn_mask), window, names,
            title=f"synthetic {table.index[i]}\nd_train {rec['d_train']:.3f}, "
                  f"d_held {rec['d_held']:.3f}",
        )  # fmt: skip
        draw_channels(
            axes[row, c:],
            *display_slice(train_images[j], train_mask),
            window,
            names,
            title=f"nearest training {rec['nearest_train']}\nratio {rec['ratio']:.2f}"
            + (" NEAR-COPY" if rec["near_copy"] else ""),
        )
    fig.suptitle("synthetic images (left) nearest their training image (right)", fontsize=9)
    fig.tight_layout()
    return _save(fig, save)
