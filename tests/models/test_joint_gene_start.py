"""JointGAN with `gene.start: gaussian`: its gene side samples the fitted Gaussian before
training, draws the wider noise everywhere it runs the chain, and trains."""

from __future__ import annotations

import torch
from conftest import TINY_JOINT

from radiogenomics.config import load_config
from radiogenomics.data.h5ad import read_cohort
from radiogenomics.data.phantom import make_phantom, write_phantom
from radiogenomics.models.joint_gan import JointGAN
from radiogenomics.nn.noise import Noise


def test_joint_gene_side_starts_from_the_gaussian(tmp_path):
    phantom = make_phantom(32, 2, size=16, n_genes=128, seed=3, progress=False)
    cohort = read_cohort(write_phantom(phantom, tmp_path / "cohort", progress=False))
    cfg = load_config(None, [*TINY_JOINT, "gene.start=gaussian"])
    model = JointGAN(cohort, cfg, progress=False)
    G = model.sampler.gene
    assert G.noise_features == 128 + cfg.gene.n_noise
    assert torch.equal(G.gaussian.factor, model.generator.gene.gaussian.factor)
    obs = model.covariates_for(6, None, 0)
    out = model.synthesize(obs, seed=0)
    codes, numeric = (torch.as_tensor(a) for a in model.encode_covariates(obs))
    noise = Noise.draw(model.image_side, 6, torch.Generator().manual_seed(0),
                       n_gene=G.noise_features)  # fmt: skip
    with torch.no_grad():
        expected = G.gaussian(noise.gene[:, :128], codes, numeric)
    assert torch.allclose(out.expression, expected, atol=1e-5)
    model.train(run_dir=tmp_path / "run", progress=False)
    assert torch.isfinite(model.synthesize(obs, seed=0).expression).all()
