"""Every AnnData key the library reads or writes, in one place."""

# obs: file paths (relative to the cohort's root or absolute) and modality flags
IMAGE = "image"
MASK = "mask"
HAS_EXPRESSION = "has_expression"
HAS_IMAGE = "has_image"
HAS_MASK = "has_mask"
# obs: voxel spacing of the patient's image on the cohort's grid (uns image_size), as text
# "0.5,0.7,2" ("" when unknown); uns[UNS][SPACING]: the cohort default, a list of floats
SPACING = "spacing"
# obs: how many 2D slices the patient's image file stacks (a cohort with uns[UNS][SLICE_AXIS]);
# recorded by validate_cohort
N_SLICES = "n_slices"

# uns: the setup dictionary, h5ad-writable
UNS = "rg"
SPATIAL_DIMS = "spatial_dims"
IMAGE_SIZE = "image_size"
CHANNELS = "channels"
# the image channels' names, in order (e.g. MRI sequences), where the manifest gives them
CHANNEL_NAMES = "channel_names"
INTENSITY = "intensity"
COVARIATES = "covariates"
CATEGORICAL = "categorical"
NUMERIC = "numeric"
GENE_STATS = "gene_stats"
MASK_LABELS = "mask_labels"
# the spatial axis (0, 1 or 2, after the channel axis) along which every image and mask file of
# a 2D cohort stacks its slices; absent or None: each file holds one image (docs/data.md)
SLICE_AXIS = "slice_axis"
PROVENANCE = "provenance"
# Set by read_cohort from the h5ad's folder; never written, so a cohort stays relocatable.
ROOT = "root"

# phantom ground truth (uns[UNS][PHANTOM]) and per-patient truth in obsm
PHANTOM = "phantom"
PROGRAMS = "rg_programs"
PHENOTYPE = "rg_phenotype"

# obsm of a synthetic cohort: the gene generator's hidden layer (the gene latent)
GENE_LATENT = "rg_gene_latent"
# uns[UNS][SYNTHETIC]: how a synthetic cohort was made (model, run, seed)
SYNTHETIC = "synthetic"

# gene selection (radiogenomics.pp): var columns f"{DE}_log2fc|pval|padj|selected" and
# f"{PATHWAYS}_selected"; uns[UNS][DE] holds the test's parameters, uns[UNS][PATHWAYS] the report
DE = "rg_de"
PATHWAYS = "rg_pathways"

# radiogenomic maps (radiogenomics.tl.conventional_map): uns[MAP] holds the long table (a dict of
# columns), var[METAGENE] each gene's metagene, varm[MAP + MAP_EFFECT] and varm[MAP + MAP_P_ADJ]
# genes x image features DataFrames (feature names as columns) of the genes' or their metagenes'
# effects and adjusted p values; MAP is the default key_added, the suffixes follow any key
MAP = "rg_map"
METAGENE = "rg_metagene"
MAP_EFFECT = "_effect"
MAP_P_ADJ = "_p_adj"
# the learned map (radiogenomics.tl.learned_map): uns[LEARNED_MAP] as uns[MAP]; for metagenes,
# var[f"{key_added}_metagene"] each gene's metagene among the base patients
LEARNED_MAP = "rg_learned_map"
