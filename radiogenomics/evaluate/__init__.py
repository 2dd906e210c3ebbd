"""Evaluation of synthetic data (DESIGN section 5).

- `genes`: realism of synthetic expression against held-out real patients (distance-matrix and
  dendrogram correlations with a real-data ceiling, per-gene KS/Wasserstein, MMD, detection AUC,
  covariate fidelity, train-on-synthetic-test-on-real), single split or patient-level k-fold.
- `baselines`: covariate-conditional Gaussian baselines the generative models must beat.
- `figures`: distance matrices, dendrograms, per-gene distributions, embeddings, Markdown report.
"""
