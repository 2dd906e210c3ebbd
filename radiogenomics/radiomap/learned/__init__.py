"""The learned radiogenomic map (docs/design.md, section 5): what a trained generator does to its images
when one genomic variable moves, the image and mask noise and the covariates held fixed (and,
on the default 'direct' route, the other genes and the gene latent too; see `route` below).

- `learned_map`: each gene (or metagene: its genes moved together) is moved by +-delta on the
  model's standardised scale for a set of base patients; the mask and image are regenerated with
  the same noise and measured with the map features (`radiomap.features.image_feature_batch`).
  Same long table as the conventional map (`radiomap.conventional.COLUMNS`).
- `gene_swap`: patients at the low end of a variable take the values of patients at the high
  end (and back), same noise; the standardised feature shift from low to high.
- `impact_maps`: where in the image a variable changes the output, mean |image(+d) - image(-d)|.

Base patients: a JointGAN's own fully synthetic patients (no cohort given), else the expression
of the cohort's patients (an ImageGAN always needs one). Masks come from the model's mask
generator (so genes can move the lesion's shape); a model without one keeps the cohort's masks.

How a variable moves (`route`):
- 'direct': the variable's genes alone, everything else fixed, the gene generator's latent
  too (`joint.use_latent`): what the expression itself does to the image.
- 'generator' (a JointGAN's own patients): the gene noise moves along the gradient A of
  the variable's score (`J^T w`, J the gene generator's Jacobian), delta / |A| long, so the
  variable moves by delta to first order, but at most one noise std (`MAX_NOISE_STEP`; with
  standardised genes |A| is about 1 or less, so at delta 1 the cap usually holds and the move
  is a secant over one noise std). The genes the model co-expresses with the variable and the
  latent move with it, as they do between the model's own patients; effects are per unit of
  the variable's measured (finite) or first-order (autograd) mean change. A joint
  model's image side reads part of a program from the latent (2D phantom demo run: the
  necrosis genes' AUROC for necrosis 0.72 direct, 0.92 here). (Moving the latent alone, by
  the pseudo-inverse of the gene generator's output layer, is ill-conditioned: that layer's
  smallest singular values are ~1e-4 of its largest on the demo run.)
"""

from radiogenomics.radiomap.learned.combination import combine_maps, gene_level
from radiogenomics.radiomap.learned.estimators import (
    AUTOGRAD_FEATURES,
    METHODS,
    gene_swap,
    impact_maps,
    learned_map,
    soft_features,
)
from radiogenomics.radiomap.learned.generator import (
    MAX_NOISE_STEP,
    ROUTES,
    Patients,
    Prepared,
    base_patients,
    directions,
    prepare,
)

__all__ = [
    "AUTOGRAD_FEATURES",
    "MAX_NOISE_STEP",
    "METHODS",
    "ROUTES",
    "Patients",
    "Prepared",
    "base_patients",
    "combine_maps",
    "directions",
    "gene_level",
    "gene_swap",
    "impact_maps",
    "learned_map",
    "prepare",
    "soft_features",
]
