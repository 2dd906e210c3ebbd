"""Evaluation of synthetic data (docs/design.md, section 5).

- `genes`: realism of synthetic expression against held-out real patients (distance-matrix and
  dendrogram correlations with a real-data ceiling, per-gene KS/Wasserstein, MMD, detection AUC,
  covariate fidelity, train-on-synthetic-test-on-real), single split or patient-level k-fold.
- `baselines`: covariate-conditional Gaussian baselines the generative models must beat.
- `images`: realism of synthetic images (Frechet radiomic distance, diversity, Dice, detection).
- `pairs`: cross-modal consistency of paired patients, the phantom's planted associations.
- `figures`: distance matrices, dendrograms, per-gene distributions, embeddings, Markdown report.
- `html`: the offline HTML report; `report`: the gene and image reports;
  `paired_report`: the paired report (genes, images, pairs, privacy, maps).
"""
