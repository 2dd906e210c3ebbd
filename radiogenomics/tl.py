"""Tools that write their results into the AnnData (scverse style).

Each tool names what it adds with `key_added` and takes `copy=False`: True works on a copy and
returns it (the input stays untouched), False writes in place and returns None.
"""

from __future__ import annotations

import anndata as ad
import pandas as pd

from radiogenomics import _keys as K
from radiogenomics.data.split import held_out

SPLIT = "rg_split"


def split(
    adata: ad.AnnData,
    fraction: float = 0.15,
    *,
    seed: int = 0,
    stratify: str | None = None,
    group: str | None = None,
    key_added: str = SPLIT,
    copy: bool = False,
) -> ad.AnnData | None:
    """Label each patient 'train' or 'held_out': the cohort's one patient-level split.

    The split is `radiogenomics.data.split.held_out`, the same that a model trained on this
    cohort with `train.val_fraction=fraction` and `seed` holds out.

    Parameters
    ----------
    adata
        The cohort.
    fraction
        Share of the patients held out.
    seed
        Seed of the split.
    stratify
        A categorical obs column whose proportions both sides keep, or None.
    group
        An obs column whose patients with one value stay on one side, or None.
    key_added
        The obs column the labels go to (categories 'train', 'held_out').
    copy
        Work on a copy of `adata` and return it, leaving `adata` untouched.

    Returns
    -------
    The labelled cohort when `copy`, else None (`obs[key_added]` written in place).

    Examples
    --------
    >>> from radiogenomics import tl
    >>> from radiogenomics.data.phantom import make_phantom
    >>> adata = make_phantom(20, 2, progress=False).adata
    >>> tl.split(adata, 0.25, seed=0)
    >>> adata.obs["rg_split"].value_counts().to_dict()
    {'train': 15, 'held_out': 5}
    """
    mask = held_out(adata.obs, fraction, seed, stratify=stratify, group=group)
    adata = adata.copy() if copy else adata
    adata.obs[key_added] = pd.Categorical(
        ["held_out" if m else "train" for m in mask], categories=["train", "held_out"]
    )
    return adata if copy else None


def conventional_map(
    adata: ad.AnnData,
    *,
    features: pd.DataFrame | None = None,
    genomic: str = "metagenes",
    subtypes=None,
    n_metagenes: int | None = None,
    method: str = "hierarchical",
    fdr: str = "benjamini-hochberg",
    categorical_test: str = "kruskal",
    data_cfg=None,
    progress: bool = False,
    key_added: str = K.MAP,
    copy: bool = False,
) -> ad.AnnData | None:
    """The conventional radiogenomic map: genes or metagenes against image features.

    `radiogenomics.radiomap.conventional.conventional_map`: genes or metagenes (`method`
    'hierarchical' or 'nmf') and the categorical obs columns named in `subtypes` against the
    lesions' image features: Spearman tests, and Kruskal-Wallis or Fisher exact tests
    (`categorical_test`) for the subtypes; p values adjusted by `fdr` over the table.

    Parameters
    ----------
    adata
        The cohort; patients with expression, an image and a mask are tested.
    features
        Image features (patients x features, indexed by patient id), or None: measured on the
        cohort's images and masks (`radiomap.features.image_feature_table`).
    genomic
        'genes' or 'metagenes'.
    subtypes
        Categorical obs column(s) tested against the features, or None.
    n_metagenes
        Number of metagenes (None: chosen from the data).
    method
        How genes become metagenes: 'hierarchical' or 'nmf'.
    fdr
        P-value adjustment over the table: 'benjamini-hochberg' or 'bonferroni'.
    categorical_test
        'kruskal' or 'fisher', for the subtypes.
    data_cfg
        The image pipeline (`config.DataConfig`) used when `features` is None.
    progress
        Show progress bars.
    key_added
        Where the map goes (see Returns).
    copy
        Work on a copy of `adata` and return it, leaving `adata` untouched.

    Returns
    -------
    The cohort with the map when `copy`, else None. Written: `uns[key_added]`, the long table
    (genomic, feature, effect, p, p_adj, method, n) as a dict of columns
    (`radiomap.conventional.map_from_uns` reads it back); `varm[key_added + '_effect']` and
    `varm[key_added + '_p_adj']`: genes x features DataFrames of each gene's Spearman rho and
    adjusted p value, for metagenes those of the gene's metagene (NaN for a gene in none);
    and, for metagenes, `var['rg_metagene']`: each gene's metagene ('' for a constant gene).
    Subtype rows live in the long table only.

    Examples
    --------
    >>> from radiogenomics import tl
    >>> from radiogenomics.data.phantom import make_phantom
    >>> from radiogenomics.radiomap.features import image_feature_batch
    >>> ph = make_phantom(24, 2, progress=False)
    >>> features = image_feature_batch(ph.images, ph.masks, index=ph.adata.obs_names)
    >>> tl.conventional_map(ph.adata, features=features, genomic="metagenes", n_metagenes=4)
    >>> ph.adata.varm["rg_map_effect"].shape == (ph.adata.n_vars, features.shape[1])
    True
    """
    from radiogenomics.radiomap.conventional import conventional_map as _map
    from radiogenomics.radiomap.conventional import effect_matrix, map_to_uns

    table, membership = _map(
        adata,
        features,
        genomic=genomic,
        subtypes=subtypes,
        n_metagenes=n_metagenes,
        method=method,
        fdr=fdr,
        categorical_test=categorical_test,
        data_cfg=data_cfg,
        progress=progress,
    )
    adata = adata.copy() if copy else adata
    adata.uns[key_added] = map_to_uns(table)
    # each gene's row of the map: its own (genes) or its metagene's
    rows = adata.var_names if membership is None else membership.reindex(adata.var_names)
    gene_rows = table[table["method"] == "spearman"]
    features = pd.unique(table["feature"])
    for suffix, value in ((K.MAP_EFFECT, "effect"), (K.MAP_P_ADJ, "p_adj")):
        wide = effect_matrix(gene_rows, value).reindex(index=rows, columns=features)
        adata.varm[key_added + suffix] = pd.DataFrame(
            wide.to_numpy(float), index=adata.var_names, columns=[str(f) for f in features]
        )
    if membership is not None:
        adata.var[K.METAGENE] = membership.reindex(adata.var_names).fillna("").astype(str)
    return adata if copy else None


def learned_map(
    adata: ad.AnnData,
    model,
    *,
    base: str = "cohort",
    genomic: str = "genes",
    method: str = "finite",
    n_patients: int = 64,
    n_draws: int = 1,
    delta: float = 1.0,
    seed: int = 0,
    progress: bool = False,
    key_added: str = K.LEARNED_MAP,
    copy: bool = False,
    **kwargs,
) -> ad.AnnData | None:
    """The learned radiogenomic map of a trained JointGAN or ImageGAN.

    `radiogenomics.radiomap.learned.learned_map`: the change of the generated images'
    features per unit of each gene or metagene, as a standardised slope with a t-test over
    the base patients.

    Parameters
    ----------
    adata
        The cohort that receives the map (and, with `base='cohort'`, gives the base patients:
        its patients with expression).
    model
        A trained JointGAN or ImageGAN of this cohort's genes.
    base
        'cohort', or 'synthetic': the joint model's own fully synthetic patients.
    genomic
        'genes' or 'metagenes'.
    method
        'finite' (finite differences) or 'autograd'.
    n_patients
        Base patients.
    n_draws
        Noise draws per patient.
    delta
        Step of a finite difference, in standardised units.
    seed
        Seed of the base patients and noise.
    progress
        Show progress bars.
    key_added
        Where the map goes (see Returns).
    copy
        Work on a copy of `adata` and return it, leaving `adata` untouched.
    **kwargs
        Other keywords of `radiomap.learned.learned_map` (`route`, `variables`, ...).

    Returns
    -------
    The cohort with the map when `copy`, else None. Written: `uns[key_added]`, the long table
    as `conventional_map` stores it (the `method` column says 'finite-difference' or
    'autograd', and ', generator route' where `route` is 'generator'), and, for metagenes,
    `var[f"{key_added}_metagene"]`: each gene's metagene.

    Examples
    --------
    >>> import tempfile
    >>> from radiogenomics import tl
    >>> from radiogenomics.config import load_config
    >>> from radiogenomics.data.h5ad import read_cohort
    >>> from radiogenomics.data.phantom import make_phantom, write_phantom
    >>> from radiogenomics.models import JointGAN
    >>> from radiogenomics.radiomap.conventional import map_from_uns
    >>> phantom = make_phantom(16, 2, size=16, n_genes=128, progress=False)
    >>> adata = read_cohort(write_phantom(phantom, tempfile.mkdtemp(), progress=False))
    >>> tiny = ["model=joint_gan", "image.channels=[8,4]", "image.critic_channels=[4,8]",
    ...         "image.n_code=4", "image.n_noise=4", "image.n_hidden=8", "gene.n_hidden=8",
    ...         "gene.n_noise=4", "train.steps=1", "train.val_fraction=0", "train.batch_size=8"]
    >>> model = JointGAN(adata, load_config(None, tiny), progress=False)
    >>> _ = model.train(progress=False)
    >>> tl.learned_map(adata, model, n_patients=4, variables=["SIZE1"])
    >>> map_from_uns(adata.uns["rg_learned_map"])["genomic"].unique().tolist()
    ['SIZE1']
    """
    from radiogenomics.radiomap.conventional import map_to_uns
    from radiogenomics.radiomap.learned import learned_map as _map

    if base not in ("cohort", "synthetic"):
        raise ValueError(f"base must be 'cohort' or 'synthetic'; got {base!r}")
    table, membership = _map(
        model,
        adata if base == "cohort" else None,
        genomic=genomic,
        method=method,
        n_patients=n_patients,
        n_draws=n_draws,
        delta=delta,
        seed=seed,
        progress=progress,
        return_membership=True,
        **kwargs,
    )
    adata = adata.copy() if copy else adata
    adata.uns[key_added] = map_to_uns(table)
    if membership is not None:
        column = f"{key_added}_metagene"
        adata.var[column] = membership.reindex(adata.var_names).fillna("").astype(str)
    return adata if copy else None
