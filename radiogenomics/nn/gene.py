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


class GaussianStart(nn.Module):
    """The multivariate Gaussian a `GeneGenerator` starts from: (z (B, n_genes), categorical,
    numeric) -> design(categorical, numeric) @ coef + z @ factor.T, (B, n_genes).

    The mean is a linear regression of every gene on the covariates (`design`: intercept,
    one-hot categorical covariates with the first category as reference, the numeric ones as
    they come), the factor a square root of the residuals' covariance: the conditional
    `MultivariateGaussian` baseline of `evaluate.baselines`, on the standardised scale.
    `coef` and `factor` are buffers (saved with the weights), zero until `set` fills them
    with a fit (`models.gene_gan.fit_gaussian_start`).
    """

    def __init__(self, n_genes: int, vocab_sizes: list[int] = (), n_numeric: int = 0):
        super().__init__()
        self.vocab_sizes, self.n_numeric = [int(v) for v in vocab_sizes], int(n_numeric)
        n_design = 1 + sum(v - 1 for v in self.vocab_sizes) + self.n_numeric
        self.register_buffer("coef", torch.zeros(n_design, n_genes))
        self.register_buffer("factor", torch.zeros(n_genes, n_genes))

    def design(self, categorical: torch.Tensor, numeric: torch.Tensor) -> torch.Tensor:
        """(B, 1 + sum(vocab - 1) + n_numeric): intercept, one-hot less the first category,
        numeric covariates."""
        parts = [numeric.new_ones((categorical.shape[0], 1), dtype=torch.float32)]
        for i, vocab in enumerate(self.vocab_sizes):
            onehot = nn.functional.one_hot(categorical[:, i].long(), vocab).float()
            parts.append(onehot[:, 1:])
        if self.n_numeric:
            parts.append(numeric.float())
        return torch.cat(parts, dim=1)

    def set(self, coef, factor) -> None:
        """Take a fit: `coef` (n_design, n_genes) and `factor` (n_genes, n_genes)."""
        for name, value in (("coef", coef), ("factor", factor)):
            value = torch.as_tensor(value, dtype=torch.float32)
            buffer = getattr(self, name)
            if tuple(value.shape) != tuple(buffer.shape):
                raise ValueError(
                    f"Gaussian start: {name} has shape {tuple(value.shape)}; expected "
                    f"{tuple(buffer.shape)}"
                )
            buffer.copy_(value)

    def forward(
        self, z: torch.Tensor, categorical: torch.Tensor, numeric: torch.Tensor
    ) -> torch.Tensor:
        return self.design(categorical, numeric) @ self.coef + z @ self.factor.T


class GeneGenerator(nn.Module):
    """(noise (B, noise_features), categorical, numeric) -> (expression (B, n_genes), hidden
    (B, n_hidden)).

    `hidden` is the last hidden layer: the gene latent the joint model passes to the image side.
    Expression comes out on the standardised scale (linear output layer).

    `start="gaussian"`: the output is a `GaussianStart` sample plus a learned correction, an
    MLP of the Gaussian sample, more noise and the covariates whose last layer starts at zero,
    so that the untrained generator samples the fitted Gaussian exactly; training learns what
    the Gaussian misses. The noise is then (B, n_genes + n_noise): the Gaussian's z first, the
    MLP's own noise after it (`noise_features` is the width either way).
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
        start: str = "noise",
    ):
        super().__init__()
        if start not in ("noise", "gaussian"):
            raise ValueError(f"start must be 'noise' or 'gaussian'; got {start!r}")
        self.n_genes, self.n_noise, self.n_hidden = n_genes, n_noise, n_hidden
        gaussian = start == "gaussian"
        self.noise_features = n_noise + (n_genes if gaussian else 0)
        self.covariates = CovariateEncoder(list(vocab_sizes), n_numeric)
        n_in = n_noise + self.covariates.out_features + (n_genes if gaussian else 0)
        self.body = _mlp(n_in, n_hidden, n_layers)
        self.out = nn.Linear(n_hidden, n_genes)
        self.gaussian = GaussianStart(n_genes, vocab_sizes, n_numeric) if gaussian else None
        if gaussian:  # the correction starts at zero: the untrained generator is the Gaussian
            nn.init.zeros_(self.out.weight)
            nn.init.zeros_(self.out.bias)

    def forward(
        self, noise: torch.Tensor, categorical: torch.Tensor, numeric: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if noise.ndim != 2 or noise.shape[1] != self.noise_features:
            raise ValueError(
                f"noise has shape {tuple(noise.shape)}; expected (batch, {self.noise_features})"
            )
        covariates = self.covariates(categorical, numeric)
        if self.gaussian is None:
            hidden = self.body(torch.cat([noise, covariates], dim=1))
            return self.out(hidden), hidden
        z, own = noise[:, : self.n_genes], noise[:, self.n_genes :]
        base = self.gaussian(z, categorical, numeric)
        hidden = self.body(torch.cat([own, covariates, base], dim=1))
        return base + self.out(hidden), hidden


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

    `projection_std` > 0 appends the std over the whole batch of its projections on that many
    fixed random unit directions (`projection_std`): the variance along a direction a is
    a' Sigma a, so these see the gene-gene covariance, which per-gene stds do not. The
    directions are a buffer, drawn from torch's generator at construction.
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
        projection_std: int = 0,
    ):
        super().__init__()
        if minibatch_std < 0:
            raise ValueError(f"minibatch_std must be >= 0 (0 turns it off); got {minibatch_std}")
        if projection_std < 0:
            raise ValueError(f"projection_std must be >= 0 (0 turns it off); got {projection_std}")
        self.minibatch_std = int(minibatch_std)
        self.projection_std = int(projection_std)
        self.covariates = CovariateEncoder(list(vocab_sizes), n_numeric)
        n_in = n_genes * (2 if self.minibatch_std else 1) + self.covariates.out_features
        self.body = _mlp(n_in + self.projection_std, n_hidden, n_layers)
        self.out = nn.Linear(n_hidden, 1)
        if self.projection_std:
            directions = torch.randn(n_genes, self.projection_std)
            self.register_buffer("directions", directions / directions.norm(dim=0))

    def forward(
        self, expression: torch.Tensor, categorical: torch.Tensor, numeric: torch.Tensor
    ) -> torch.Tensor:
        parts = [expression]
        if self.minibatch_std:
            parts.append(minibatch_std(expression, self.minibatch_std))
        if self.projection_std:
            parts.append(projection_std(expression, self.directions))
        parts.append(self.covariates(categorical, numeric))
        return self.out(self.body(torch.cat(parts, dim=1))).squeeze(1)


def projection_std(x: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
    """(B, k): every sample gets the population std over the batch of x @ directions
    (directions (n_genes, k)), + 1e-8 under the root so the gradient stays finite; not
    detached (see `GeneCritic`)."""
    projected = x @ directions.to(x.dtype)  # (B, k)
    return minibatch_std(projected, projected.shape[0])
