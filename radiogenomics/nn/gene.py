"""Gene networks (gGAN-style MLPs): tensors in, tensors out, no AnnData.

Covariates enter both networks the same way: each categorical covariate through an embedding of
size floor(sqrt(vocab)) + 1, numeric covariates (already standardised) concatenated as they are.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def embedding_dim(vocab: int) -> int:
    """gGAN's embedding size for a categorical covariate with `vocab` categories."""
    return int(math.floor(math.sqrt(vocab))) + 1


class CovariateEncoder(nn.Module):
    """(categorical codes (B, n_cat) long, numeric (B, n_num)) -> (B, out_features)."""

    def __init__(self, vocab_sizes: list[int], n_numeric: int):
        super().__init__()
        self.embeddings = nn.ModuleList(nn.Embedding(v, embedding_dim(v)) for v in vocab_sizes)
        self.n_numeric = n_numeric
        self.out_features = sum(embedding_dim(v) for v in vocab_sizes) + n_numeric

    def forward(self, categorical: torch.Tensor, numeric: torch.Tensor) -> torch.Tensor:
        parts = [emb(categorical[:, i]) for i, emb in enumerate(self.embeddings)]
        if self.n_numeric:
            parts.append(numeric)
        if not parts:
            return categorical.new_zeros((categorical.shape[0], 0), dtype=torch.float32)
        return torch.cat(parts, dim=1)


def _mlp(in_features: int, n_hidden: int, n_layers: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(n_layers):
        layers += [nn.Linear(in_features if i == 0 else n_hidden, n_hidden), nn.ReLU()]
    return nn.Sequential(*layers)


class GeneGenerator(nn.Module):
    """(noise (B, n_noise), categorical, numeric) -> (expression (B, n_genes), hidden (B, n_hidden)).

    `hidden` is the last hidden layer: the gene latent the joint model passes to the image side.
    Expression comes out on the standardised scale (linear output layer).
    """

    def __init__(
        self,
        n_genes: int,
        vocab_sizes: list[int] = (),
        n_numeric: int = 0,
        *,
        n_noise: int = 64,
        n_hidden: int = 256,
        n_layers: int = 2,
    ):
        super().__init__()
        self.n_genes, self.n_noise, self.n_hidden = n_genes, n_noise, n_hidden
        self.covariates = CovariateEncoder(list(vocab_sizes), n_numeric)
        self.body = _mlp(n_noise + self.covariates.out_features, n_hidden, n_layers)
        self.out = nn.Linear(n_hidden, n_genes)

    def forward(
        self, noise: torch.Tensor, categorical: torch.Tensor, numeric: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.body(torch.cat([noise, self.covariates(categorical, numeric)], dim=1))
        return self.out(hidden), hidden


def minibatch_std(x: torch.Tensor, group_size: int) -> torch.Tensor:
    """Per-gene standard deviation of each sample's group, (B, n_genes): the minibatch
    standard-deviation feature of Karras et al. 2018 (ProGAN), kept per gene.

    The batch is dealt into max(1, B // group_size) groups (sample i in group i % n_groups, so
    every group has group_size or more samples when B >= group_size); each sample gets its
    group's std (population std, + 1e-8 under the root so the gradient stays finite). The
    statistic is not detached: a critic's score then depends on the other samples of the group,
    and so does its gradient (see `GeneCritic`).
    """
    B = x.shape[0]
    n_groups = max(1, B // group_size)
    if B % n_groups == 0:  # the usual case, by a reshape (index_add's double backward is slow)
        groups = x.reshape(B // n_groups, n_groups, x.shape[1])
        var = groups.var(dim=0, unbiased=False, keepdim=True)
        return torch.sqrt(var + 1e-8).expand_as(groups).reshape(x.shape)
    group = torch.arange(B, device=x.device) % n_groups
    count = torch.bincount(group, minlength=n_groups).to(x.dtype)[:, None]
    mean = x.new_zeros((n_groups, x.shape[1])).index_add(0, group, x) / count
    var = x.new_zeros((n_groups, x.shape[1])).index_add(0, group, (x - mean[group]) ** 2) / count
    return torch.sqrt(var + 1e-8)[group]


class GeneCritic(nn.Module):
    """(expression (B, n_genes), categorical, numeric) -> Wasserstein critic score (B,).

    No normalisation layers: batch statistics would break the per-sample gradient penalty.

    `minibatch_std` > 0 (a group size) appends each sample's group's per-gene std to its input
    (`minibatch_std`), so the critic sees the dispersion of a batch, which a per-sample critic
    cannot: without it, generated expression can shrink towards the mean (median per-gene std
    ~0.7-0.9 of the real one) at no cost. Real and generated batches are scored in separate
    calls, so a group never mixes them. The statistic is not detached, also under the gradient
    penalty (`gradient_penalty` differentiates the sum of the interpolates' scores): the penalty
    then bounds the gradient of the group's summed score, through the dispersion path too, as
    in ProGAN; a detached statistic would leave the critic free to be arbitrarily steep along
    it. Set 0 for the plain gGAN critic.
    """

    def __init__(
        self,
        n_genes: int,
        vocab_sizes: list[int] = (),
        n_numeric: int = 0,
        *,
        n_hidden: int = 256,
        n_layers: int = 2,
        minibatch_std: int = 4,
    ):
        super().__init__()
        if minibatch_std < 0:
            raise ValueError(f"minibatch_std must be >= 0 (0 turns it off); got {minibatch_std}")
        self.minibatch_std = int(minibatch_std)
        self.covariates = CovariateEncoder(list(vocab_sizes), n_numeric)
        n_in = n_genes * (2 if self.minibatch_std else 1) + self.covariates.out_features
        self.body = _mlp(n_in, n_hidden, n_layers)
        self.out = nn.Linear(n_hidden, 1)

    def forward(
        self, expression: torch.Tensor, categorical: torch.Tensor, numeric: torch.Tensor
    ) -> torch.Tensor:
        parts = [expression]
        if self.minibatch_std:
            parts.append(minibatch_std(expression, self.minibatch_std))
        parts.append(self.covariates(categorical, numeric))
        return self.out(self.body(torch.cat(parts, dim=1))).squeeze(1)
