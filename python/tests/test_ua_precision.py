import numpy as np

from uatools.bench.ua_precision import transformed, uniformity


def test_uniformity_is_the_mean_pairwise_cosine():
    rng = np.random.default_rng(3)
    rows = rng.normal(size=(5, 4)).astype(np.float32) + 2.0
    vectors = dict(enumerate(rows))
    wide = rows.astype(np.float64)
    unit = wide / (np.linalg.norm(wide, axis=1, keepdims=True) + 1e-10)  # the seed's epsilon
    cosines = unit @ unit.T
    direct = cosines[np.triu_indices(5, 1)].mean()
    assert abs(float(uniformity(vectors, [0, 1, 2, 3, 4])) - direct) < 1e-12


def test_centring_and_standardising_follow_their_definitions():
    rng = np.random.default_rng(5)
    rows = rng.normal(size=(6, 3)).astype(np.float32)
    rows[:, 0] += 100.0  # a rogue dimension
    vectors = dict(enumerate(rows))
    wide = rows.astype(np.float64)
    centred = transformed(vectors, "centred")
    assert np.allclose(np.stack([centred[i] for i in range(6)]).astype(np.float64), wide - wide.mean(axis=0))
    z = np.stack([transformed(vectors, "standardised")[i] for i in range(6)]).astype(np.float64)
    assert np.allclose(z, (wide - wide.mean(axis=0)) / wide.std(axis=0))
    # The raw cosines sit near 1 around the rogue dimension; the centred ones do not.
    assert float(uniformity(vectors, [0, 1, 2])) > 0.99
    assert float(uniformity(centred, [0, 1, 2])) < 0.9
