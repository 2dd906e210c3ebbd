"""The joint model's two sides as single modules, so the engine trains, averages (EMA) and
checkpoints each as a whole: the generator side (gene generator + image side) and the critic
side (gene critic + image critic side). A side of a single-modality model is None."""

from __future__ import annotations

from torch import nn

from radiogenomics.nn.gene import GeneCritic, GeneGenerator
from radiogenomics.nn.image import CriticSide, ImageSide


class JointGenerator(nn.Module):
    """`gene`: noise + covariates -> (expression, latent); `side`: gene code -> mask -> image."""

    def __init__(self, gene: GeneGenerator | None, side: ImageSide | None):
        super().__init__()
        self.gene, self.side = gene, side


class JointCritic(nn.Module):
    """`gene`: the expression critic; `side`: the image, mask (and gene read-back) critics."""

    def __init__(self, gene: GeneCritic | None, side: CriticSide | None):
        super().__init__()
        self.gene, self.side = gene, side
