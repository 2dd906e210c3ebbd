"""Every AnnData key the library reads or writes, in one place."""

# obs: file paths (relative to the cohort's root or absolute) and modality flags
IMAGE = "image"
MASK = "mask"
HAS_EXPRESSION = "has_expression"
HAS_IMAGE = "has_image"
HAS_MASK = "has_mask"

# uns: the setup dictionary, h5ad-writable
UNS = "rg"
SPATIAL_DIMS = "spatial_dims"
IMAGE_SIZE = "image_size"
CHANNELS = "channels"
INTENSITY = "intensity"
COVARIATES = "covariates"
CATEGORICAL = "categorical"
NUMERIC = "numeric"
GENE_STATS = "gene_stats"
MASK_LABELS = "mask_labels"
PROVENANCE = "provenance"
# Set by read_cohort from the h5ad's folder; never written, so a cohort stays relocatable.
ROOT = "root"

# phantom ground truth (uns[UNS][PHANTOM]) and per-patient truth in obsm
PHANTOM = "phantom"
PROGRAMS = "rg_programs"
PHENOTYPE = "rg_phenotype"
