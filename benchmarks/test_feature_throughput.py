"""Throughput of the map features (pytest-benchmark): `image_feature_batch` on 512 phantom
lesions, the batched path against the per-lesion reference (`reference=True`).

Run with `pytest benchmarks --benchmark-only -k feature`; numbers are per call, on whatever
machine runs it. The reference path in 3D takes ~20 s a call, so its rounds are few.
"""

from __future__ import annotations

import pytest

from radiogenomics.data.phantom import make_phantom
from radiogenomics.radiomap.features import IMAGE_FEATURES, image_feature_batch


@pytest.fixture(scope="module", params=[2, 3], ids=["2d", "3d"])
def lesions(request):
    return make_phantom(512, request.param, seed=0, progress=False)


@pytest.mark.parametrize("reference", [False, True], ids=["batched", "per-lesion"])
def test_image_features_512(benchmark, lesions, reference):
    table = benchmark.pedantic(
        image_feature_batch,
        args=(lesions.images, lesions.masks),
        kwargs={"reference": reference},
        rounds=3 if reference else 5,
    )
    assert table.shape == (512, len(IMAGE_FEATURES))
