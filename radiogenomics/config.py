"""The config tree: dataclasses are the single source of truth; YAML uses their field names."""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml


@dataclass
class DataConfig:
    """How a cohort's images are read and normalised for the models."""

    spatial_dims: Literal[2, 3] = 2
    # Size the images are resized to; None keeps the cohort's uns["rg"]["image_size"].
    image_size: list[int] | None = None
    # Image channels; None takes the cohort's (uns["rg"]["channels"]), a number must match it.
    in_channels: int | None = None
    # minmax: each image to [-1, 1]; percentile: clip to [lower, upper] percentiles then [-1, 1];
    # fixed: map [a_min, a_max] to [-1, 1] (CT in HU, say).
    intensity: Literal["minmax", "percentile", "fixed"] = "minmax"
    percentiles: list[float] = field(default_factory=lambda: [0.5, 99.5])
    a_min: float = 0.0
    a_max: float = 1.0
    # CohortDataset only (the MONAI Dataset API): random flips and affine transforms, and the
    # fraction of the cohort whose loaded images it caches. The models hold their patients'
    # images in memory and apply their own augmentation on the tensors.
    augment: bool = False
    cache_rate: float = 1.0

    def __post_init__(self):
        if self.image_size is not None and not all(
            isinstance(s, int) and s >= 1 for s in self.image_size
        ):
            raise ValueError(
                f"key 'data.image_size' must be positive integers (one per spatial axis); "
                f"got {self.image_size}"
            )
        if self.image_size is not None and len(self.image_size) != self.spatial_dims:
            raise ValueError(
                f"key 'data.image_size' has {len(self.image_size)} entries "
                f"{self.image_size} but data.spatial_dims is {self.spatial_dims}"
            )
        if not 0.0 <= self.cache_rate <= 1.0:
            raise ValueError(f"key 'data.cache_rate' must be in [0, 1]; got {self.cache_rate}")
        if self.in_channels is not None and self.in_channels < 1:
            raise ValueError(f"key 'data.in_channels' must be >= 1; got {self.in_channels}")
        if self.a_min >= self.a_max:
            raise ValueError(
                f"key 'data.a_min' ({self.a_min}) must be below 'data.a_max' ({self.a_max})"
            )
        lo, hi = (self.percentiles + [None, None])[:2]
        if len(self.percentiles) != 2 or not 0 <= lo < hi <= 100:
            raise ValueError(
                f"key 'data.percentiles' must be [lower, upper] within 0..100; "
                f"got {self.percentiles}"
            )


@dataclass
class PhantomConfig:
    """The built-in phantom cohort (radiogenomics.data.phantom)."""

    n: int = 256
    spatial_dims: Literal[2, 3] = 2
    # Edge length of the square/cubic images; None: 64 in 2D, 32 in 3D.
    size: int | None = None
    n_genes: int = 256
    noise: float = 0.5
    # Fraction of patients with no expression and of patients with no image (unpaired patients).
    frac_image_only: float = 0.0
    frac_expression_only: float = 0.0
    image_format: Literal["nii.gz", "npy", "png"] = "nii.gz"

    def __post_init__(self):
        if self.n < 1:
            raise ValueError(f"key 'phantom.n' must be >= 1; got {self.n}")
        if self.size is not None and self.size < 16:
            raise ValueError(f"key 'phantom.size' must be >= 16; got {self.size}")
        if self.n_genes < 128:  # 8 programs x 16 genes
            raise ValueError(f"key 'phantom.n_genes' must be >= 128; got {self.n_genes}")
        if self.noise < 0:
            raise ValueError(f"key 'phantom.noise' must be >= 0; got {self.noise}")
        if not 0.0 <= self.frac_image_only < 1.0:
            raise ValueError(
                f"key 'phantom.frac_image_only' must be in [0, 1); got {self.frac_image_only}"
            )
        if not 0.0 <= self.frac_expression_only <= 1.0:
            raise ValueError(
                "key 'phantom.frac_expression_only' must be in [0, 1]; got "
                f"{self.frac_expression_only}"
            )
        # 1.0 alone: a gene-only phantom (expression without images, e.g. to merge with an
        # image-only cohort: `cohort merge`); otherwise some patients stay paired
        gene_only = self.frac_expression_only == 1.0 and self.frac_image_only == 0.0
        if self.frac_image_only + self.frac_expression_only >= 1.0 and not gene_only:
            raise ValueError(
                "config keys 'phantom.frac_image_only' + 'phantom.frac_expression_only' must be < 1"
            )
        if self.image_format == "png" and self.spatial_dims == 3:
            raise ValueError("key 'phantom.image_format' is 'png', which cannot hold 3D volumes")


@dataclass
class GeneConfig:
    """The gene WGAN-GP (gGAN-style): which genes, how they are scaled, network sizes."""

    # Genes to model, in order; None models all of the cohort's genes.
    genes: list[str] | None = None
    # Natural log1p before standardising (for counts/FPKM); the inverse brings samples back.
    log1p: bool = False
    # Covariates the generator and critic are conditioned on; None takes all of the cohort's.
    covariates: list[str] | None = None
    # Noise dimension fed to the generator (the gene latent is its last hidden layer).
    n_noise: int = 64
    # Width and depth of the generator and critic MLPs (gGAN: 2 x 256, ReLU).
    n_hidden: int = 256
    n_layers: int = 2
    # Learning rate of the gene generator and critic; None uses train.lr and train.lr_critic.
    lr: float | None = None
    # Dispersion: a plain WGAN-GP critic scores one patient at a time and lets generated
    # expression shrink towards the mean (docs/methods.md, the gene WGAN-GP).
    # Group size of the critic's minibatch-standard-deviation input (Karras et al. 2018, per
    # gene: each sample also shows the critic its group's per-gene std); 0 turns it off.
    minibatch_std: int = 4
    # Weight of the generator's dispersion term: mean over genes of the squared log ratio of the
    # generated batch's std to the real batch's (same covariates), times sqrt(n_genes) so the
    # weight means the same for 50 genes as for 1000; 0 turns it off.
    dispersion_weight: float = 4.0
    # Model selection: the held-out realism score minus this weight times |log median per-gene
    # std ratio| (synthetic patients with the training patients' covariates against those
    # patients), so shrunken weights stop winning; 0 scores correlations alone.
    select_dispersion: float = 1.0
    # Synthetic patients the selection score draws at least (the held-out and the training
    # patients' covariate rows repeated): the few held-out patients' worth is a noisy score, and
    # the best of many noisy scores is mostly luck; 0 draws each row once.
    select_samples: int = 0
    # What the generator starts from: "noise" (gGAN's MLP of noise) or "gaussian" (the
    # multivariate Gaussian fitted to the training patients, a linear regression on the
    # covariates plus Ledoit-Wolf shrunk residual covariance, plus a learned correction that
    # starts at zero, so the untrained generator samples the Gaussian; nn.gene.GeneGenerator).
    start: Literal["noise", "gaussian"] = "noise"
    # Number of fixed random directions whose batch std the critic also sees (the variance
    # along a direction depends on the gene-gene covariance; nn.gene.GeneCritic); 0: none.
    projection_std: int = 0

    def __post_init__(self):
        if self.lr is not None and self.lr <= 0:
            raise ValueError(f"key 'gene.lr' must be > 0; got {self.lr}")
        if self.projection_std < 0:
            raise ValueError(
                f"key 'gene.projection_std' must be >= 0 (0 turns it off); got "
                f"{self.projection_std}"
            )
        if self.minibatch_std < 0:
            raise ValueError(
                f"key 'gene.minibatch_std' must be >= 0 (0 turns it off); got {self.minibatch_std}"
            )
        for key in ("dispersion_weight", "select_dispersion"):
            if not getattr(self, key) >= 0:
                raise ValueError(
                    f"key 'gene.{key}' must be >= 0 (0 turns it off); got {getattr(self, key)}"
                )
        if self.select_samples < 0:
            raise ValueError(
                f"key 'gene.select_samples' must be >= 0 (0 draws each row once); got "
                f"{self.select_samples}"
            )
        for key in ("n_noise", "n_hidden", "n_layers"):
            if getattr(self, key) < 1:
                raise ValueError(f"key 'gene.{key}' must be >= 1; got {getattr(self, key)}")
        if self.genes is not None and len(self.genes) == 0:
            raise ValueError("key 'gene.genes' is an empty list; use null for all genes")


@dataclass
class TrainConfig:
    """The adversarial training loop shared by the models (WGAN-GP)."""

    # Generator steps; each follows n_critic critic steps on fresh batches.
    steps: int = 3000
    batch_size: int = 32
    lr: float = 5e-4
    # Critic learning rate; None uses lr.
    lr_critic: float | None = None
    betas: list[float] = field(default_factory=lambda: [0.5, 0.9])
    # Critic steps per generator step and the gradient penalty weight (WGAN-GP: 5 and 10).
    n_critic: int = 5
    gp_weight: float = 10.0
    # The GANs' learning rates stay constant until this fraction of the steps, then fall
    # linearly towards 0 at the last step (pix2pix's schedule); 1 keeps them constant.
    lr_decay_start: float = 1.0
    # Exponential moving average of the generator weights used for sampling; 0 turns it off.
    ema_decay: float = 0.999
    # Fraction of the cohort's patients held out for model selection (radiogenomics.data.split:
    # one split per cohort and seed, so every model of a cohort holds out the same patients),
    # stratified by the obs column `stratify` and grouped by the obs column `group` where set.
    val_fraction: float = 0.15
    stratify: str | None = None
    group: str | None = None
    # Score realism on the held-out patients every this many steps and keep the best weights.
    eval_every: int = 100
    # Keep the best weights only among evaluations from this step on: early weights can score
    # well on gene-gene correlations before they have learned the covariates.
    select_after: int = 500
    # Score the untrained weights (step 0) too, before the first step, as a candidate whatever
    # select_after says: selection keeps them when no later weights score better on the
    # held-out patients (with gene.start: gaussian, the Gaussian itself).
    select_start: bool = False
    # With select_start: later weights replace the untrained ones only when their held-out
    # score beats the start's by this many times the start score's spread (`score_sd`, its
    # sd over bootstrap resamples of the held-out patients, which the gene score reports),
    # so that a few held-out patients' noise does not pick a worse correction; among the
    # weights that clear it, the best score wins. 0 compares the scores as they are.
    select_margin: float = 0.0
    # Stop after this many evaluations without improvement; 0 never stops early.
    patience: int = 0
    # Write a resumable checkpoint every this many steps.
    checkpoint_every: int = 500
    # Record the losses (log.csv, TensorBoard) every this many steps: reading a loss off the
    # GPU waits for it, so the steps in between run without a host-device sync.
    log_every: int = 10
    # CUDA only: bf16 autocast of the forward passes (the gradient penalty stays fp32).
    amp: bool = True
    # CUDA only: image networks and batches in channels-last memory (faster convolutions
    # under bf16). Off, with amp, gives the plain eager fp32 step the benchmarks compare with.
    channels_last: bool = True

    def __post_init__(self):
        for key in (
            "steps",
            "batch_size",
            "n_critic",
            "eval_every",
            "checkpoint_every",
            "log_every",
        ):
            if getattr(self, key) < 1:
                raise ValueError(f"key 'train.{key}' must be >= 1; got {getattr(self, key)}")
        if self.select_after < 0:
            raise ValueError(f"key 'train.select_after' must be >= 0; got {self.select_after}")
        if self.patience < 0:
            raise ValueError(f"key 'train.patience' must be >= 0; got {self.patience}")
        if not self.select_margin >= 0:
            raise ValueError(
                f"key 'train.select_margin' must be >= 0 (0 turns it off); got {self.select_margin}"
            )
        if self.select_margin > 0 and not self.select_start:
            raise ValueError(
                f"key 'train.select_margin' ({self.select_margin}) is the bar trained weights "
                "must clear over the untrained ones: it needs train.select_start=true"
            )
        if self.lr <= 0 or (self.lr_critic is not None and self.lr_critic <= 0):
            raise ValueError("keys 'train.lr' and 'train.lr_critic' must be > 0")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"key 'train.betas' must be two numbers in [0, 1); got {self.betas}")
        if self.gp_weight < 0:
            raise ValueError(f"key 'train.gp_weight' must be >= 0; got {self.gp_weight}")
        if not 0 <= self.lr_decay_start <= 1:
            raise ValueError(
                f"key 'train.lr_decay_start' must be in [0, 1]; got {self.lr_decay_start}"
            )
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"key 'train.ema_decay' must be in [0, 1); got {self.ema_decay}")
        if not 0 <= self.val_fraction < 1:
            raise ValueError(f"key 'train.val_fraction' must be in [0, 1); got {self.val_fraction}")


# train.augment's transforms, in the order they are applied
AUGMENT_POLICIES = ("translation", "cutout", "brightness", "contrast", "flip")


def _off(value) -> str:
    """How a YAML override turns a key of this value off."""
    return "false" if isinstance(value, bool) else "[]" if isinstance(value, list) else "0"


@dataclass
class ImageConfig:
    """The image side (radiogenomics.nn.image): generator, critic, gene encoder, mask generator."""

    # Conditioning of the image generator: the lesion mask (SPADE at every decoder scale), the
    # gene code (FiLM at every decoder scale) and a background image fused through learned gates
    # (Xu et al. 2019). With all three off the generator is an unconditional DCGAN-style one.
    use_mask: bool = True
    use_genes: bool = True
    use_background: bool = False
    # Feature channels of the generator's decoder, coarse to fine; one scale per entry, each
    # doubling the resolution (the coarsest grid is image_size / 2**(len - 1)).
    channels: list[int] = field(default_factory=lambda: [128, 64, 32, 16])
    # Give the generator (mask_depth) and the critic (critic_mask_depth) the mask's relative
    # depth (distance to the lesion's edge over its largest value) beside the mask, so that a
    # core can be placed as a fraction of the lesion (the phantom's necrotic core). The
    # critic's copy is off by default: on the 2D phantom it cost the images' gene dependence.
    mask_depth: bool = True
    critic_mask_depth: bool = False
    # Critic (PatchGAN) channels, fine to coarse; each entry halves the resolution.
    critic_channels: list[int] = field(default_factory=lambda: [32, 64, 128])
    # instance or none: batch norm breaks the gradient penalty, so it is not offered.
    critic_norm: Literal["instance", "none"] = "instance"
    # Noise fed to the image generator and the gene code size.
    n_noise: int = 64
    n_code: int = 64
    # GeneEncoder MLP width and depth (expression -> gene code).
    n_hidden: int = 256
    n_layers: int = 2
    # Learning rate of the image networks; None uses train.lr and train.lr_critic.
    lr: float | None = None
    # Train the MaskGenerator (gene code + noise -> mask) beside the image generator, so
    # fully synthetic patients get gene-dependent lesion shapes.
    train_masks: bool = True
    # wgan-gp (default, with the gradient penalty), lsgan (least squares), hinge, or dcgan
    # (non-saturating cross-entropy, as the lesion DCGAN).
    objective: Literal["wgan-gp", "lsgan", "hinge", "dcgan"] = "wgan-gp"
    # Matching-aware negatives: a real image with another patient's genes (or mask) must score
    # below the right pair by a margin (train.losses.matching_loss); this weight, 0 for off.
    mismatch_weight: float = 0.5
    # Partners for those negatives: 'random' or 'similar_mask' (the batch's patient with the
    # closest lesion size, so the critic must read the genes from the image rather than from
    # the lesion's shape).
    negatives: Literal["similar_mask", "random"] = "random"
    # Gene read-back (nn.image.GeneRegressor): a critic-side head learns to read the top
    # `gene_aux_components` principal components of expression from real images and masks; the
    # generator pays gene_aux_weight * their squared error on its own images (an
    # auxiliary-classifier head for continuous genes; docs/methods.md, the image GAN). 0 for off.
    gene_aux_weight: float = 1.0
    gene_aux_components: int = 16
    # Drift penalty weight * E[D(real)^2] (Karras et al. 2018) for wgan-gp: the Wasserstein
    # loss ignores a constant offset of the critic, and with the gene projection term the
    # scores otherwise drift to magnitudes that drown the matching signal.
    drift_weight: float = 0.001
    # Pixel L1 weight between the generated and the real image inside the background (only
    # with use_background): keeps the fused background faithful.
    background_l1: float = 0.0
    # Dilation (pixels) of the mask cut out of the background image, so the generator sees no
    # lesion edge.
    background_margin: int = 3
    # Mask read-back (OASIS-style, Schoenfeld et al. 2021): a critic-side U-Net (widths
    # `critic_channels`) learns to segment real images; the generator pays
    # mask_consistency_weight * its Dice + cross-entropy on the images it draws for real masks,
    # so the lesion is drawn where the mask says. Not on a joint model's fully synthetic
    # patients: through their straight-through masks it pulled the mask generator off the
    # genes. 0 for off.
    mask_consistency_weight: float = 0.0
    # Shape association (train.objectives.shape_association_loss): the generated lesions'
    # shape descriptors (log area, log axis ratio, margin irregularity: nn.shape) must follow
    # the gene read-back components (`gene_aux_components`) as the real training patients' do:
    # each lesion pays this weight * its squared distance, beyond one real residual std, from
    # what a regression on the real patients predicts for its genes. It names the shapes the
    # genes set, which the mask critic alone did not find (docs/methods.md, the joint model).
    # Needs image.train_masks and expression. 0 for off.
    shape_association_weight: float = 0.0
    # Appearance association (train.objectives.appearance_association_loss): the same for the
    # generated images inside their (fixed) masks, with the appearance descriptors
    # (nn.appearance: contrast with the ring around the lesion, log texture, dark fraction) of
    # the real training patients' images (docs/methods.md, the joint model).
    # Needs expression and the mask (image.use_genes, image.use_mask). 0 for off.
    appearance_association_weight: float = 0.0
    # --- the GAN image's tells and data-efficient training (docs/methods.md, "Data-efficient
    # GAN training"); every default leaves training as it was.
    # How the generators' convolutions (SPADE's included) pad: zeros (as before) prints a
    # frame along the border of generated images and masks; reflect or replicate do not
    # (nn.image.set_padding).
    padding: Literal["zeros", "reflect", "replicate"] = "zeros"
    # Per-pixel noise added to the image generator's output, its strength per channel set by
    # the gene code (nn.image.ImageGenerator): fine texture the last 3x3 convolution would
    # otherwise smooth.
    output_noise: bool = False
    # Differentiable augmentation (DiffAugment, Zhao et al. 2020; train.augment): transforms
    # applied to everything the image and mask critics see, real and generated alike, in the
    # critic and generator steps (gradient penalty on the augmented inputs), one draw per
    # sample for an image and its mask. Any of translation, cutout, brightness, contrast,
    # flip; [] for off.
    augment_policy: list[str] = field(default_factory=list)
    # Probability of each transform per sample: fixed, or the start of the adaptive p.
    augment_p: float = 1.0
    # Adaptive p (ADA, Karras et al. 2020): the target of r_t = E[sign(D(real) - E D(fake))];
    # p rises when the critic's r_t is above it (ADA uses 0.6). None keeps p fixed.
    augment_target: float | None = None
    # Adaptive p: critic steps in which p can move from 0 to 1.
    augment_ramp: int = 500
    # What translation moves in at the border: the image's reflection, or zeros.
    augment_fill: Literal["reflect", "zeros"] = "reflect"
    # Which network draws the image: 'gan' (the ImageGenerator above, trained against the
    # image critic) or 'flow' (rectified flow, nn.flow: MONAI's DiffusionModelUNet predicts
    # the velocity from noise to image with the mask and its depth as input channels and the
    # gene code as a cross-attention token; docs/methods.md, the flow backend). Either way
    # the gene encoder, the mask generator and its critic are the ones above.
    backend: Literal["gan", "flow"] = "gan"
    # flow: the velocity U-Net's widths, fine to coarse (each entry one level, halving the
    # resolution after all but the last; attention with the gene token at the coarsest level
    # and in the middle), and its residual blocks per level.
    flow_channels: list[int] = field(default_factory=lambda: [32, 64, 64])
    flow_res_blocks: int = 1
    # flow: Euler steps from noise to image when sampling (the scheduler's, RFlowScheduler).
    flow_steps: int = 25
    # flow: classifier-free guidance scale w (Ho & Salimans 2022): the velocity
    # v(no genes) + w (v(genes) - v(no genes)); 1 follows the genes' velocity alone, 0 ignores
    # the genes, above 1 exaggerates them.
    flow_guidance: float = 2.0
    # flow: the share of training patients whose genes are dropped (they take the encoder's
    # learned "no genes" code, as image-only patients do), which trains the unconditional
    # velocity that guidance needs.
    flow_gene_dropout: float = 0.1
    # flow: the gene code also added to the U-Net's time embedding (through a linear map, as
    # a class embedding), so it reaches every residual block at every level; the single
    # cross-attention token alone reaches the coarsest level only, as a constant bias there
    # (attention over one token is that token's value).
    flow_code_embedding: bool = False

    # keys of one backend only, and why they make no sense with the other
    _GAN_ONLY = {
        "gene_aux_weight": "reads genes back from generated images",
        "mask_consistency_weight": "segments generated images",
        "appearance_association_weight": "measures generated images",
        "background_l1": "compares generated images with their backgrounds",
        "use_background": "fuses a real background into the generator",
        "critic_mask_depth": "feeds the image critic",
        "output_noise": "adds noise to the GAN generator's output",
        "augment_policy": "augments what the GAN's critics see",
    }

    def _check_backend(self):
        """Keys that make no sense with the chosen backend are errors that name them."""
        if self.backend == "gan":
            for f in dataclasses.fields(self):
                if f.name.startswith("flow_") and getattr(self, f.name) != (
                    f.default_factory() if callable(f.default_factory) else f.default
                ):
                    raise ValueError(
                        f"key 'image.{f.name}' sets the flow backend: it needs image.backend=flow"
                    )
            return
        for key, why in self._GAN_ONLY.items():
            if getattr(self, key):
                raise ValueError(
                    f"key 'image.{key}' {why}, which the flow backend does not make in "
                    f"training (image.backend=flow): set image.{key}="
                    f"{_off(getattr(self, key))}"
                )
        if not self.flow_channels or any(c < 1 for c in self.flow_channels):
            raise ValueError("key 'image.flow_channels' must be a non-empty list of positive ints")
        if self.flow_res_blocks < 1:
            raise ValueError(
                f"key 'image.flow_res_blocks' must be >= 1; got {self.flow_res_blocks}"
            )
        if not 1 <= self.flow_steps <= 1000:
            raise ValueError(f"key 'image.flow_steps' must be in [1, 1000]; got {self.flow_steps}")
        if self.flow_guidance < 0:
            raise ValueError(f"key 'image.flow_guidance' must be >= 0; got {self.flow_guidance}")
        if not 0 <= self.flow_gene_dropout < 1:
            raise ValueError(
                f"key 'image.flow_gene_dropout' must be in [0, 1); got {self.flow_gene_dropout}"
            )

    def __post_init__(self):
        self._check_backend()
        for key in ("channels", "critic_channels"):
            values = getattr(self, key)
            if not values or any(c < 1 for c in values):
                raise ValueError(f"key 'image.{key}' must be a non-empty list of positive ints")
        for key in ("n_noise", "n_code", "n_hidden", "n_layers"):
            if getattr(self, key) < 1:
                raise ValueError(f"key 'image.{key}' must be >= 1; got {getattr(self, key)}")
        if self.lr is not None and self.lr <= 0:
            raise ValueError(f"key 'image.lr' must be > 0; got {self.lr}")
        if self.mismatch_weight < 0:
            raise ValueError(
                f"key 'image.mismatch_weight' must be >= 0; got {self.mismatch_weight}"
            )
        if self.drift_weight < 0:
            raise ValueError(f"key 'image.drift_weight' must be >= 0; got {self.drift_weight}")
        if self.gene_aux_weight < 0:
            raise ValueError(
                f"key 'image.gene_aux_weight' must be >= 0; got {self.gene_aux_weight}"
            )
        if self.gene_aux_components < 1:
            raise ValueError(
                f"key 'image.gene_aux_components' must be >= 1; got {self.gene_aux_components}"
            )
        if self.background_l1 < 0:
            raise ValueError(f"key 'image.background_l1' must be >= 0; got {self.background_l1}")
        if self.mask_consistency_weight < 0:
            raise ValueError(
                "key 'image.mask_consistency_weight' must be >= 0; got "
                f"{self.mask_consistency_weight}"
            )
        if self.shape_association_weight < 0:
            raise ValueError(
                "key 'image.shape_association_weight' must be >= 0; got "
                f"{self.shape_association_weight}"
            )
        if self.shape_association_weight > 0 and not (self.train_masks and self.use_genes):
            raise ValueError(
                "key 'image.shape_association_weight' shapes the mask generator's lesions after "
                "the genes: it needs image.train_masks=true and image.use_genes=true"
            )
        if self.appearance_association_weight < 0:
            raise ValueError(
                "key 'image.appearance_association_weight' must be >= 0; got "
                f"{self.appearance_association_weight}"
            )
        if self.appearance_association_weight > 0 and not (self.use_genes and self.use_mask):
            raise ValueError(
                "key 'image.appearance_association_weight' sets the appearance inside the "
                "lesion after the genes: it needs image.use_genes=true and image.use_mask=true "
                "(the generator must know where the lesion is)"
            )
        if self.background_margin < 0:
            raise ValueError(
                f"key 'image.background_margin' must be >= 0; got {self.background_margin}"
            )
        if self.use_background and not self.use_mask:
            raise ValueError("key 'image.use_background' needs image.use_mask (the lesion's place)")
        self._check_augment()

    def _check_augment(self):
        unknown = [p for p in self.augment_policy if p not in AUGMENT_POLICIES]
        if unknown or len(set(self.augment_policy)) != len(self.augment_policy):
            raise ValueError(
                f"key 'image.augment_policy' takes distinct names from {list(AUGMENT_POLICIES)}; "
                f"got {self.augment_policy}"
            )
        if not 0 <= self.augment_p <= 1:
            raise ValueError(f"key 'image.augment_p' must be in [0, 1]; got {self.augment_p}")
        if self.augment_target is not None and not -1 < self.augment_target < 1:
            raise ValueError(
                f"key 'image.augment_target' must be in (-1, 1) or null; got {self.augment_target}"
            )
        if self.augment_target is not None and not self.augment_policy:
            raise ValueError("key 'image.augment_target' adapts p of image.augment_policy: set one")
        if self.augment_ramp < 1:
            raise ValueError(f"key 'image.augment_ramp' must be >= 1; got {self.augment_ramp}")


@dataclass
class JointConfig:
    """The joint model (models.JointGAN): how its gene and image sides train together."""

    # joint: one generator objective over the gene, mask and image critics; fully synthetic
    # patients (generated expression -> mask -> image) are scored by the image and mask
    # critics, whose gradients reach the gene generator. separate: the gene side on every
    # patient with expression, the image side on every patient with an image conditioned on
    # real expression, composed at sampling. One modality alone is GeneGAN's or ImageGAN's
    # job (model: gene_gan, image_gan).
    mode: str = "joint"
    # Weight of the fully synthetic patients' terms (critic and generator) in joint mode.
    pair_weight: float = 1.0
    # Pass the gene generator's latent (its last hidden layer) to the image side's gene
    # encoder beside the generated expression (Xu et al.'s gene features); real patients take
    # the encoder's learned "no latent" vector.
    use_latent: bool = True
    # Extra updates of the gene side alone per training step, each with `gene_n_critic`
    # critic steps (joint and separate modes): the gene WGAN-GP needs thousands of updates
    # (the gene_wgan preset: 3000 x 5 critic steps), which its MLPs make cheap, while the image
    # side's convolutions set how many steps a run affords. Without them the joint model's
    # synthetic expression lost most of its per-gene spread.
    gene_steps: int = 4
    gene_n_critic: int = 5

    def __post_init__(self):
        alone = {"gene": "gene_gan", "image": "image_gan"}
        if self.mode in alone:
            raise ValueError(
                f"key 'joint.mode': {self.mode!r} trains one modality, which is what "
                f"model={alone[self.mode]} does: set model: {alone[self.mode]}"
            )
        if self.mode not in ("joint", "separate"):
            raise ValueError(f"key 'joint.mode' must be 'joint' or 'separate'; got {self.mode!r}")
        if self.pair_weight < 0:
            raise ValueError(f"key 'joint.pair_weight' must be >= 0; got {self.pair_weight}")
        if self.gene_steps < 0:
            raise ValueError(f"key 'joint.gene_steps' must be >= 0; got {self.gene_steps}")
        if self.gene_n_critic < 1:
            raise ValueError(f"key 'joint.gene_n_critic' must be >= 1; got {self.gene_n_critic}")


@dataclass
class SegmentConfig:
    """The segmentation net (a MONAI U-Net): training and architecture."""

    channels: list[int] = field(default_factory=lambda: [16, 32, 64, 128])
    strides: list[int] = field(default_factory=lambda: [2, 2, 2])
    num_res_units: int = 2
    dropout: float = 0.1
    # Optimiser steps (batches), batch size and learning rate (Adam).
    steps: int = 2000
    batch_size: int = 16
    lr: float = 1e-3
    # Held-out Dice/IoU every this many steps (the held-out patients: train.val_fraction).
    eval_every: int = 100
    # Threshold on the foreground probability.
    threshold: float = 0.5

    def __post_init__(self):
        if len(self.strides) != len(self.channels) - 1:
            raise ValueError(
                f"key 'segment.strides' needs len(channels) - 1 = {len(self.channels) - 1} "
                f"entries; got {self.strides}"
            )
        for key in ("steps", "batch_size", "eval_every"):
            if getattr(self, key) < 1:
                raise ValueError(f"key 'segment.{key}' must be >= 1; got {getattr(self, key)}")
        if self.num_res_units < 0:
            raise ValueError(f"key 'segment.num_res_units' must be >= 0; got {self.num_res_units}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"key 'segment.dropout' must be in [0, 1); got {self.dropout}")
        if self.lr <= 0:
            raise ValueError(f"key 'segment.lr' must be > 0; got {self.lr}")
        if not 0 < self.threshold < 1:
            raise ValueError(f"key 'segment.threshold' must be in (0, 1); got {self.threshold}")


@dataclass
class SelectConfig:
    """Gene selection (`radiogenomics select-genes`, radiogenomics.pp)."""

    # de: differential expression between two groups; pathway: GMT gene sets;
    # variance: the n_top most variable genes.
    method: Literal["de", "pathway", "variance"] = "pathway"
    # de: the obs column with the groups, the group, and the reference ("rest" = all others).
    groupby: str | None = None
    group: str | None = None
    reference: str = "rest"
    # de: obs column pairing samples of one patient (normal/tumour): Wilcoxon signed-rank;
    # None compares unpaired groups with the rank-sum test.
    pair_by: str | None = None
    correction: Literal["benjamini-hochberg", "bonferroni"] = "benjamini-hochberg"
    alpha: float = 0.05
    min_log2fc: float = 1.0
    # de: base of the log the expression is on (e, 2, 10); None means linear values.
    log_base: float | None = None
    # pathway: the GMT file and the gene sets (names, or a substring matching one name).
    gmt: str | None = None
    pathways: list[str] | None = None
    # variance: how many genes.
    n_top: int = 1000

    def __post_init__(self):
        if not 0 < self.alpha < 1:
            raise ValueError(f"key 'select.alpha' must be in (0, 1); got {self.alpha}")
        if self.min_log2fc < 0:
            raise ValueError(f"key 'select.min_log2fc' must be >= 0; got {self.min_log2fc}")
        if self.n_top < 1:
            raise ValueError(f"key 'select.n_top' must be >= 1; got {self.n_top}")


@dataclass
class Config:
    """Root of the config tree."""

    seed: int = 0
    device: str = "auto"
    # Which model `radiogenomics train` builds.
    model: Literal["gene_gan", "image_gan", "joint_gan", "segmentation"] = "gene_gan"
    data: DataConfig = field(default_factory=DataConfig)
    phantom: PhantomConfig = field(default_factory=PhantomConfig)
    select: SelectConfig = field(default_factory=SelectConfig)
    gene: GeneConfig = field(default_factory=GeneConfig)
    image: ImageConfig = field(default_factory=ImageConfig)
    joint: JointConfig = field(default_factory=JointConfig)
    segment: SegmentConfig = field(default_factory=SegmentConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


# --------------------------------------------------------------------------------------------
# dict <-> dataclass with errors that name the key


def _type_name(tp) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check `value` against the annotation `tp`, converting where it is lossless."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ValueError as err:
                errors.append(str(err))
        raise ValueError(
            errors[0]
            if len(errors) == 1
            else f"key '{key}': got {value!r}, expected {_type_name(tp)}"
        )
    if origin is Literal:
        for arg in args:
            if value == arg and type(value) is type(arg):
                return value
        # YAML "3" vs 3: accept the string form of a numeric choice
        for arg in args:
            if str(value) == str(arg):
                return arg
        raise ValueError(f"key '{key}' must be one of {', '.join(map(repr, args))}; got {value!r}")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"key '{key}' must be a list; got {value!r}")
        (item_tp,) = args[:1] or (Any,)
        return [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ValueError(f"key '{key}' must be a mapping; got {value!r}")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, prefix=key)
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ValueError(f"key '{key}' must be true or false; got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ValueError(f"key '{key}' must be an integer; got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads 2e-4 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ValueError(f"key '{key}' must be a number; got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ValueError(f"key '{key}' must be a string; got {value!r}")
    raise TypeError(f"unsupported config annotation {tp!r} for '{key}'")


# Keys of earlier versions: an error that names the new key (None: removed, with why).
RENAMED = {
    "gene.n_latent": "gene.n_noise",
    "data.channels": "data.in_channels",
    "segment.val_fraction": "train.val_fraction",
    "data.batch_size": "train.batch_size (segment.batch_size for the segmentation net)",
    "data.num_workers": None,
}
_REMOVED_WHY = "the models hold their images in memory and no loader has workers"


def from_dict(cls, data: dict | None, prefix: str = ""):
    """Build dataclass `cls` from a nested dict; unknown keys and bad values raise ValueError."""
    data = {} if data is None else data
    where = f"'{prefix}'" if prefix else "the config root"
    if not isinstance(data, dict):
        raise ValueError(f"config section {where} must be a mapping; got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        full = f"{prefix}.{key}" if prefix else str(key)
        if full in RENAMED:
            new = RENAMED[full]
            raise ValueError(
                f"key '{full}' was renamed to '{new}'"
                if new
                else f"key '{full}' was removed: {_REMOVED_WHY}"
            )
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = (
                f" (did you mean '{close[0]}'?)" if close else f"; known keys: {', '.join(names)}"
            )
            raise ValueError(f"unknown key '{full}'{hint}")
        kwargs[key] = _coerce(value, hints[key], full)
    return cls(**kwargs)


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Read a YAML config (or the defaults when `path` is None) and apply `key=value` overrides."""
    data: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file not found: {path}")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ValueError(f"config file {path} is not valid YAML: {err}") from err
        if not isinstance(data, dict):
            raise ValueError(f"config file {path} must hold a mapping at the top level")
    for item in overrides or []:
        apply_override(data, item)
    try:
        return from_dict(Config, data)
    except ValueError as err:
        raise ValueError(f"{_blamed(err, path, overrides or [])}: {err}") from None


def _blamed(err: ValueError, path, overrides: list[str]) -> str:
    """Where a bad value came from: the last `--set` of the key the error names (a later
    override wins), else the config file (or the defaults)."""
    import re

    named = re.findall(r"key '([^']+)'", str(err))
    for item in reversed(overrides):
        key = item.partition("=")[0].strip()
        if any(n == key or n.startswith(key + ".") or key.startswith(n + ".") for n in named):
            return f"--set {item}"
    return f"config {path or '(defaults)'}"


def apply_override(data: dict, item: str) -> None:
    """Apply one `section.key=value` override in place; the value is parsed as YAML."""
    if "=" not in item:
        raise ValueError(f"override {item!r} must look like section.key=value")
    dotted, raw = item.split("=", 1)
    keys = dotted.strip().split(".")
    if not all(keys):
        raise ValueError(f"override {item!r} has an empty key")
    node = data
    for k in keys[:-1]:
        node = node.setdefault(k, {})
        if not isinstance(node, dict):
            raise ValueError(f"override {item!r}: '{k}' is not a config section")
    try:
        node[keys[-1]] = yaml.safe_load(raw)
    except yaml.YAMLError as err:
        raise ValueError(f"override {item!r}: value is not valid YAML: {err}") from err


def save_config(cfg, path: str | Path) -> Path:
    """Write the resolved config as YAML, atomically."""
    from radiogenomics._atomic import atomic_write_text

    return atomic_write_text(Path(path), dump_config(cfg))


def dump_config(cfg) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)
