"""The data a model trains on, as typed values that training helpers take as arguments.

A model builds them once from its cohort (`CohortView`) and keeps them as `gene_data` and
`image_data`; evaluation and the learned map read them through the models' public methods.
Both hold the cohort's one patient split (`data.split`): `train` and `held_out` index the
same patients for every model of a cohort and seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class GeneData:
    """Expression and covariates of a cohort's patients, for the gene side.

    Attributes
    ----------
    expression : np.ndarray
        (n_obs, n_genes) standardised expression of every cohort row (zeros where absent).
    codes, numeric : np.ndarray
        (n_obs, n_cat) int64 covariate codes and (n_obs, n_num) standardised numerics (zeros
        for patients without expression, who may lack covariates).
    rows : np.ndarray
        The cohort rows with expression.
    train, held_out : np.ndarray
        The rows with expression on each side of the cohort's split.
    """

    expression: np.ndarray
    codes: np.ndarray
    numeric: np.ndarray
    rows: np.ndarray
    train: np.ndarray
    held_out: np.ndarray

    def tensors(self, rows, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(expression, codes, numeric) of cohort `rows` on `device`."""
        return tuple(  # type: ignore[return-value]
            torch.as_tensor(a[rows]).to(device) for a in (self.expression, self.codes, self.numeric)
        )


@dataclass
class ImageData:
    """The image patients of a cohort (those with an image, and a mask where the model needs
    one), in memory.

    Attributes
    ----------
    patients : list of str
        Their ids, in cohort order.
    rows : np.ndarray
        Their cohort rows.
    images : torch.Tensor
        (N, C, *S) in [-1, 1].
    masks : torch.Tensor
        (N, 1, *S) binary.
    expression : torch.Tensor
        (N, n_genes) standardised expression (zeros where absent; (N, 0) for a model without
        genes).
    present : torch.Tensor
        (N,) bool: which of them have expression the model reads.
    train, held_out : np.ndarray
        Positions (among these N) of the training and held-out patients.
    """

    patients: list[str]
    rows: np.ndarray
    images: torch.Tensor
    masks: torch.Tensor
    expression: torch.Tensor
    present: torch.Tensor
    train: np.ndarray
    held_out: np.ndarray

    @classmethod
    def load(
        cls, view, rows, train_rows, held_out_rows, data_cfg, *, genes: bool = True,
        shape=None, progress: bool = False,
    ) -> ImageData:  # fmt: skip
        """The image patients at cohort `rows` of a `CohortView`, their images loaded with
        `data_cfg`; `train_rows` and `held_out_rows` (cohort rows) become positions among
        them. `genes` False: no expression (a model that reads none). `shape`: the
        (C, *S) the images must load as (ValueError showing both otherwise)."""
        images, masks = view.images(rows, data_cfg, progress=progress)
        if shape is not None and tuple(images.shape[1:]) != tuple(shape):
            raise ValueError(
                f"the cohort's images load as {tuple(images.shape[1:])}; the model was built "
                f"for {tuple(shape)}"
            )
        if genes:
            expression, present = view.tensor(rows)
        else:
            expression = torch.zeros(len(rows), 0)
            present = torch.zeros(len(rows), dtype=torch.bool)
        return cls(
            patients=[str(p) for p in view.ids[rows]],
            rows=np.asarray(rows),
            images=images,
            masks=masks,
            expression=expression,
            present=present,
            train=np.flatnonzero(np.isin(rows, train_rows)),
            held_out=np.flatnonzero(np.isin(rows, held_out_rows)),
        )

    def positions(self, patients) -> torch.Tensor:
        """Positions of `patients` (ids) among the image patients; ValueError naming the
        unknown ones."""
        index = {p: i for i, p in enumerate(self.patients)}
        unknown = [p for p in patients if p not in index]
        if unknown:
            raise ValueError(f"patients {unknown[:10]} are not among the model's image patients")
        return torch.as_tensor([index[p] for p in patients], dtype=torch.long)
