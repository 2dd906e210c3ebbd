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


class GeneCritic(nn.Module):
    """(expression (B, n_genes), categorical, numeric) -> Wasserstein critic score (B,).

    No normalisation layers: batch statistics would break the per-sample gradient penalty.
    """

    def __init__(
        self,
        n_genes: int,
        vocab_sizes: list[int] = (),
        n_numeric: int = 0,
        *,
        n_hidden: int = 256,
        n_layers: int = 2,
    ):
        super().__init__()
        self.covariates = CovariateEncoder(list(vocab_sizes), n_numeric)
        self.body = _mlp(n_genes + self.covariates.out_features, n_hidden, n_layers)
        self.out = nn.Linear(n_hidden, 1)

    def forward(
        self, expression: torch.Tensor, categorical: torch.Tensor, numeric: torch.Tensor
    ) -> torch.Tensor:
        h = self.body(torch.cat([expression, self.covariates(categorical, numeric)], dim=1))
        return self.out(h).squeeze(1)
