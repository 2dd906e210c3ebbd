"""The patient chain as two modules, so the engine trains, averages (EMA) and checkpoints each
as a whole: the generator side (gene generator + image side) and the critic side (gene critic
+ image critic side). A side may be None (the forward then makes what the other side makes)."""

from __future__ import annotations

import torch
from torch import nn

from radiogenomics.nn.gene import GeneCritic, GeneGenerator
from radiogenomics.nn.image import CriticSide, Generated, ImageSide
from radiogenomics.nn.noise import Noise


class JointGenerator(nn.Module):
    """noise + covariates -> expression and latent -> gene code -> mask -> image.

    Parameters
    ----------
    gene : GeneGenerator or None
        Noise and covariates -> (standardised expression, latent); None for images alone.
    side : ImageSide or None
        Gene code -> mask -> image; None for expression alone.

    Examples
    --------
    >>> import torch
    >>> from radiogenomics.nn.gene import GeneGenerator
    >>> G = JointGenerator(GeneGenerator(6, [], 0, n_noise=4, n_hidden=8), None)
    >>> noise = Noise.draw(None, 3, torch.Generator().manual_seed(0), n_gene=4)
    >>> tuple(G(noise, torch.zeros(3, 0, dtype=torch.long), torch.zeros(3, 0)).expression.shape)
    (3, 6)
    """

    def __init__(self, gene: GeneGenerator | None, side: ImageSide | None):
        super().__init__()
        self.gene, self.side = gene, side

    def forward(
        self,
        noise: Noise,
        codes: torch.Tensor,
        numeric: torch.Tensor,
        *,
        straight_through: bool = False,
        images: bool = True,
    ) -> Generated:
        """Fully synthetic patients with covariate `codes` (B, n_cat) and `numeric` (B,
        n_num): the expression from `noise.gene`, then (with an image side) its gene code
        (reading the latent where the encoder takes one), mask and image from the rest of
        `noise`. `straight_through`: masks binary forward, soft backward (training).
        `images` False: expression, code and masks only (the flow backend's training)."""
        n = len(codes)
        if self.gene is not None:
            expression, latent = self.gene(noise.gene, codes, numeric)
            present = torch.ones(n, dtype=torch.bool, device=expression.device)
        else:
            device = codes.device
            expression, latent = torch.zeros(n, 0, device=device), None
            present = torch.zeros(n, dtype=torch.bool, device=device)
        if self.side is None:
            return Generated(expression=expression, latent=latent, present=present)
        code = self.side.code(expression, present, latent)
        out = self.side(code, noise, straight_through=straight_through, images=images)
        out.expression, out.latent, out.present = expression, latent, present
        return out


class JointCritic(nn.Module):
    """`gene`: the expression critic; `side`: the image, mask (and gene read-back) critics."""

    def __init__(self, gene: GeneCritic | None, side: CriticSide | None):
        super().__init__()
        self.gene, self.side = gene, side
