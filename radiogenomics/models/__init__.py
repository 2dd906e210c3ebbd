"""AnnData-facing model classes, registered by import under their config name (`model`)."""

from radiogenomics.models.base import CohortModel, load_model
from radiogenomics.models.gene_gan import GeneGAN
from radiogenomics.models.image_gan import ImageGAN
from radiogenomics.models.joint_gan import JointGAN
from radiogenomics.models.segmenter import Segmenter

MODELS = CohortModel.registry

__all__ = ["MODELS", "CohortModel", "GeneGAN", "ImageGAN", "JointGAN", "Segmenter", "load_model"]
