"""Throughput of the map features (pytest-benchmark): `image_feature_batch` on phantom lesions
(full size 512, smoke size 32), the batched path against the per-lesion reference
(`reference=True`) in one group. The reference path takes ~20 s a call on 512 3D lesions, so
its rounds are few. Harness: `_bench.py`.
"""

from __future__ import annotations

import pytest
from _bench import measure

from radiogenomics.data.phantom import make_phantom
from radiogenomics.radiomap.features import IMAGE_FEATURES, image_feature_batch

LESIONS = {"full": 512, "smoke": 32}


@pytest.fixture(scope="module", params=[2, 3], ids=["2d", "3d"])
def lesions(request, size):
    return make_phantom(LESIONS[size], request.param, seed=0, progress=False)


@pytest.mark.parametrize("reference", [False, True], ids=["batched", "per-lesion"])
def test_image_features(benchmark, lesions, size, reference):
    n = len(lesions.images)
    table = measure(
        benchmark, lambda: image_feature_batch(lesions.images, lesions.masks, reference=reference),
        device="cpu", dtype="fp32", batch=n, shape=list(lesions.images.shape[2:]), size=size,
        group=f"features-{lesions.images.ndim - 2}d", rounds=(1 if reference else 2, 3 if reference else 5),
        warmup=(0, 1), method="per-lesion" if reference else "batched",
    )  # fmt: skip
    assert table.shape == (n, len(IMAGE_FEATURES))
