"""The data a model trains on, as typed values that training helpers take as arguments.

A model builds them once from its cohort (`CohortView`) and keeps them as `gene_data` and
`image_data`; evaluation and the learned map read them through the models' public methods.
Both hold the cohort's one patient split (`data.split`): `train` and `held_out` index the
same patients for every model of a cohort and seed.

A cohort of slice stacks (`uns["rg"]["slice_axis"]`, docs/data.md) stays one entry per patient
here: `images` is each patient's evaluation slice (what held-out scores, evaluation and
sampling in real masks read: one per patient, so their counts are patients), while training
draws from every slice (`ImageData.slices`): a batch picks patients uniformly, then one slice
of each uniformly. Patients, not slices, weigh the same: as on the gene side, where each
patient is one expression profile, and as in sampling, where a synthetic patient is one slice.
Since the split is by patient, all of a patient's slices are on its side.
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
class Slices:
    """The training images of some patients: every slice of each, and how to draw one.

    Attributes
    ----------
    images, masks : torch.Tensor
        (M, C, *S) and (M, 1, *S): the patients' slices, each patient's together.
    first, count : torch.Tensor
        (P,) int64: where each patient's slices start among the M, and how many it has.
    stacked : bool
        False for a cohort of one image per patient (then M = P, slice i is patient i).
    """

    images: torch.Tensor
    masks: torch.Tensor
    first: torch.Tensor
    count: torch.Tensor
    stacked: bool

    def draw(self, idx: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
        """Slice positions (B,) for the patient positions `idx` (B,): one of each patient's
        slices, uniformly. Without stacks it is `idx`, drawing nothing, so a cohort of one
        image per file trains on the random stream it always did."""
        if not self.stacked:
            return idx
        u = torch.rand(len(idx), generator=rng)
        count = self.count[idx]
        return self.first[idx] + torch.minimum((u * count).long(), count - 1)


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
        (N, C, *S) in [-1, 1]; for slice stacks each patient's evaluation slice.
    masks : torch.Tensor
        (N, 1, *S) binary.
    expression : torch.Tensor
        (N, n_genes) standardised expression (zeros where absent; (N, 0) for a model without
        genes).
    present : torch.Tensor
        (N,) bool: which of them have expression the model reads.
    train, held_out : np.ndarray
        Positions (among these N) of the training and held-out patients.
    slice_images, slice_masks : torch.Tensor or None
        (M, C, *S), (M, 1, *S): every slice of a cohort of slice stacks; None otherwise.
    slice_owner : np.ndarray or None
        (M,) int64: the patient position (among the N) of each slice, in patient order.
    """

    patients: list[str]
    rows: np.ndarray
    images: torch.Tensor
    masks: torch.Tensor
    expression: torch.Tensor
    present: torch.Tensor
    train: np.ndarray
    held_out: np.ndarray
    slice_images: torch.Tensor | None = None
    slice_masks: torch.Tensor | None = None
    slice_owner: np.ndarray | None = None

    @property
    def stacked(self) -> bool:
        """Whether the patients' images are slice stacks."""
        return self.slice_images is not None

    @property
    def n_slices(self) -> np.ndarray:
        """(N,) how many slices each patient has (ones without stacks)."""
        if not self.stacked:
            return np.ones(len(self.patients), np.int64)
        return np.bincount(self.slice_owner, minlength=len(self.patients))

    def slices(self, positions) -> Slices:
        """Every slice of the patients at `positions` (e.g. `train`), for drawing batches:
        `Slices.draw` maps positions into `positions` (0..P-1) to rows of its tensors."""
        positions = np.asarray(positions, dtype=np.int64)
        if not self.stacked:
            idx = torch.as_tensor(positions)
            ones = torch.ones(len(positions), dtype=torch.long)
            first = torch.arange(len(positions))
            return Slices(self.images[idx], self.masks[idx], first, ones, stacked=False)
        own = [np.flatnonzero(self.slice_owner == p) for p in positions]
        counts = np.array([len(o) for o in own], dtype=np.int64)
        first = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        idx = torch.as_tensor(np.concatenate([np.zeros(0, np.int64), *own]))
        return Slices(
            self.slice_images[idx],
            self.slice_masks[idx],
            torch.as_tensor(first),
            torch.as_tensor(counts),
            stacked=True,
        )

    @classmethod
    def load(
        cls, view, rows, train_rows, held_out_rows, data_cfg, *, genes: bool = True,
        shape=None, progress: bool = False,
    ) -> ImageData:  # fmt: skip
        """The image patients at cohort `rows` of a `CohortView`, their images loaded with
        `data_cfg`; `train_rows` and `held_out_rows` (cohort rows) become positions among
        them. `genes` False: no expression (a model that reads none). `shape`: the
        (C, *S) the images must load as (ValueError showing both otherwise). A cohort of
        slice stacks loads every slice, and each patient's evaluation slice from them."""
        from radiogenomics.data.cohort import slice_axis_of
        from radiogenomics.data.dataset import evaluation_slice

        stack = None
        if slice_axis_of(view.adata) is None:
            images, masks = view.images(rows, data_cfg, progress=progress)
        else:
            stack = view.slices(rows, data_cfg, progress=progress)
            counts = np.bincount(stack[2], minlength=len(rows))
            starts = np.cumsum(counts) - counts  # a patient's slices are together
            ids = view.ids[rows]
            pick = [s + evaluation_slice(p, n) for p, s, n in zip(ids, starts, counts, strict=True)]
            images, masks = stack[0][pick], stack[1][pick]
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
            slice_images=None if stack is None else stack[0],
            slice_masks=None if stack is None else stack[1],
            slice_owner=None if stack is None else stack[2],
        )

    def positions(self, patients) -> torch.Tensor:
        """Positions of `patients` (ids) among the image patients; ValueError naming the
        unknown ones."""
        index = {p: i for i, p in enumerate(self.patients)}
        unknown = [p for p in patients if p not in index]
        if unknown:
            raise ValueError(f"patients {unknown[:10]} are not among the model's image patients")
        return torch.as_tensor([index[p] for p in patients], dtype=torch.long)
