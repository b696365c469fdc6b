"""Image metrics on feature vectors: Fréchet distance, KID, precision/recall, nearest neighbours, the feature space."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg

from genforge.plugins.creative.images.metrics import (
    FeatureSpace,
    frechet_distance,
    frechet_from_moments,
    kid,
    nearest,
    pixel_vectors,
    precision_recall,
)


def gaussian(n, d, seed, shift=0.0):
    return np.random.default_rng(seed).normal(size=(n, d)) + shift


def test_frechet_of_one_gaussian_is_sampling_noise():
    n, d = 2000, 8
    expected = 2 * d / n + d * (d + 1) / (2 * n)  # mean term + covariance term for two samples of N(0, I)
    fd = frechet_distance(gaussian(n, d, 0), gaussian(n, d, 1))
    assert 0 <= fd < 3 * expected
    assert frechet_distance(gaussian(n, d, 0), gaussian(n, d, 0)) == pytest.approx(0.0, abs=1e-9)


def test_frechet_of_a_shifted_gaussian_is_the_squared_shift():
    n, d = 4000, 6
    shift = np.array([1.0, -2.0, 0.5, 0.0, 0.0, 1.5])
    fd = frechet_distance(gaussian(n, d, 0), gaussian(n, d, 1, shift))
    assert fd == pytest.approx(shift @ shift, abs=0.1)


def test_frechet_matches_the_diagonal_formula_and_scipy_sqrtm():
    mu_a, mu_b = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, -1.0])
    var_a, var_b = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
    direct = ((mu_a - mu_b) ** 2).sum() + ((np.sqrt(var_a) - np.sqrt(var_b)) ** 2).sum()
    assert frechet_from_moments(mu_a, np.diag(var_a), mu_b, np.diag(var_b)) == pytest.approx(direct, rel=1e-10)

    # full, non-commuting covariances: the textbook route through sqrtm of the product
    a = gaussian(500, 5, 2) @ np.random.default_rng(3).normal(size=(5, 5))
    b = gaussian(500, 5, 4) @ np.random.default_rng(5).normal(size=(5, 5)) + 0.3
    ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    textbook = ((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(ca + cb - 2 * scipy.linalg.sqrtm(ca @ cb).real)
    assert frechet_distance(a, b) == pytest.approx(textbook, rel=1e-6)


def test_kid_is_near_zero_for_one_distribution_and_positive_for_a_shift():
    a, b = gaussian(1000, 8, 0), gaussian(1000, 8, 1)
    assert abs(kid(a, b, subset_size=500, subsets=10)) < 0.03
    assert kid(a, b + 0.5, subset_size=500, subsets=10) > 0.5
    # subset_size is capped at the smaller set; the seed fixes the draw
    assert kid(a[:50], b, seed=3, subsets=5) == kid(a[:50], b, seed=3, subsets=5)


def test_precision_recall_identical_far_and_one_mode():
    real = gaussian(600, 4, 0)
    assert precision_recall(real, real.copy()) == (1.0, 1.0)
    p, r = precision_recall(real, gaussian(600, 4, 1))
    assert p > 0.8 and r > 0.8

    p, r = precision_recall(real, gaussian(600, 4, 1, shift=10.0))
    assert p < 0.05 and r < 0.05

    two_modes = np.concatenate([gaussian(300, 4, 2, -6.0), gaussian(300, 4, 3, 6.0)])
    p, r = precision_recall(two_modes, gaussian(300, 4, 4, 6.0))  # the fake covers only the +6 mode
    assert p > 0.8
    assert r < 0.6


def test_precision_recall_chunked_like_whole(monkeypatch):
    from genforge.plugins.creative.images import metrics

    real, fake = gaussian(300, 3, 0), gaussian(250, 3, 1, 0.5)
    whole = precision_recall(real, fake)
    monkeypatch.setattr(metrics, "_BLOCK_BYTES", 4 * 300 * 7)  # 7-row blocks
    assert precision_recall(real, fake) == whole


def test_nearest_matches_brute_force():
    q, base = gaussian(130, 7, 0), gaussian(500, 7, 1)
    dist, idx = nearest(q, base, chunk=32)
    full = np.linalg.norm(q[:, None, :] - base[None, :, :], axis=2)
    np.testing.assert_array_equal(idx, full.argmin(1))
    np.testing.assert_allclose(dist, full.min(1), rtol=1e-12)
    # an exact copy is at distance 0, not float32 round-off
    dist, idx = nearest(base[[5, 9]] + 0.0, base)
    assert list(idx) == [5, 9] and list(dist) == [0.0, 0.0]


def test_feature_space_drops_a_constant_column_and_standardises():
    real = gaussian(200, 4, 0) * [1.0, 5.0, 1.0, 1.0] + [0.0, 3.0, 0.0, 0.0]
    real[:, 2] = 7.0  # a dead unit
    space = FeatureSpace(real)
    assert space.dim == 3 and list(space.keep) == [True, True, False, True]
    z = space.apply(real)
    assert z.shape == (200, 3) and z.dtype == np.float64
    np.testing.assert_allclose(z.mean(0), 0, atol=1e-12)
    np.testing.assert_allclose(z.std(0), 1, rtol=1e-12)
    assert space.apply(gaussian(10, 4, 1)).shape == (10, 3)
    with pytest.raises(ValueError, match="fitted on 4"):
        space.apply(gaussian(10, 5, 1))
    with pytest.raises(ValueError, match="constant"):
        FeatureSpace(np.ones((10, 3)))


def test_pixel_vectors_give_per_pixel_rms_distance():
    black = np.zeros((1, 4, 6, 3), np.uint8)
    white = np.full((1, 4, 6, 3), 255, np.uint8)
    half = black.copy()
    half[..., :3, :] = 255  # half the pixel values differ by the full range
    vb, vw, vh = pixel_vectors(black), pixel_vectors(white), pixel_vectors(half)
    assert vb.shape == (1, 72) and vb.dtype == np.float32
    assert np.linalg.norm(vb - vw) == pytest.approx(1.0, rel=1e-6)
    assert np.linalg.norm(vb - vh) == pytest.approx(np.sqrt(0.5), rel=1e-6)
    assert pixel_vectors(np.zeros((2, 8, 8), np.uint8)).shape == (2, 64)
    with pytest.raises(ValueError, match="uint8"):
        pixel_vectors(np.zeros((2, 8, 8), np.float32))
