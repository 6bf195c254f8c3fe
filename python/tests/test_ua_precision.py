import numpy as np

from uatools.bench.ua_precision import uniformity


def test_uniformity_is_the_mean_pairwise_cosine():
    rng = np.random.default_rng(3)
    rows = rng.normal(size=(5, 4)).astype(np.float32) + 2.0
    vectors = dict(enumerate(rows))
    wide = rows.astype(np.float64)
    unit = wide / (np.linalg.norm(wide, axis=1, keepdims=True) + 1e-10)  # the seed's epsilon
    cosines = unit @ unit.T
    direct = cosines[np.triu_indices(5, 1)].mean()
    assert abs(float(uniformity(vectors, [0, 1, 2, 3, 4])) - direct) < 1e-12
