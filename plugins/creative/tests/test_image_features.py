"""The image feature extractor: a digits classifier that learns, save/load, seeded random nets, grayscale and RGB."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits

from genforge.plugins.creative.images.features import (
    FeatureNet,
    extract,
    load_feature_net,
    random_feature_net,
    save_feature_net,
    train_classifier,
)


@pytest.fixture(scope="module")
def digits():
    """scikit-learn's 8 × 8 digits (values 0..16) as uint8 16 × 16 images, split 80/20 with a fixed seed."""
    data = load_digits()
    small = (data.images / 16 * 255).round().astype(np.uint8)  # (1797, 8, 8)
    images = np.stack([np.asarray(Image.fromarray(a).resize((16, 16), Image.BILINEAR)) for a in small])
    order = np.random.default_rng(0).permutation(len(images))
    cut = int(0.8 * len(images))
    return images[order[:cut]], data.target[order[:cut]], images[order[cut:]], data.target[order[cut:]]


@pytest.fixture(scope="module")
def digits_net(digits):
    train_x, train_y, _, _ = digits
    return train_classifier(train_x, train_y, 10, seed=0, steps=200, threads=1)  # ~98 % in a few seconds


def test_digits_classifier_learns(digits, digits_net):
    _, _, test_x, test_y = digits
    feats, probs = extract(digits_net, test_x)
    assert feats.shape == (len(test_x), 128) and feats.dtype == np.float32
    assert probs.shape == (len(test_x), 10) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5)
    assert (probs.argmax(1) == test_y).mean() >= 0.93
    assert not digits_net.training


def test_save_load_round_trip(tmp_path, digits, digits_net):
    _, _, test_x, _ = digits
    path = tmp_path / "nets" / "digits.safetensors"
    save_feature_net(digits_net, path, {"dataset": "digits", "size": 16})
    assert [p.name for p in path.parent.iterdir()] == ["digits.safetensors"]  # no temporary file left behind
    net, meta = load_feature_net(path)
    assert meta == {"dataset": "digits", "size": 16}
    assert net.config == digits_net.config and not net.training
    before, after = extract(digits_net, test_x[:50]), extract(net, test_x[:50])
    np.testing.assert_array_equal(before[0], after[0])
    np.testing.assert_array_equal(before[1], after[1])

    with pytest.raises(TypeError, match="JSON"):
        save_feature_net(digits_net, tmp_path / "bad.safetensors", {"array": np.zeros(2)})


def test_random_feature_net_is_seeded(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (6, 12, 12, 3), dtype=np.uint8)
    a, b, c = random_feature_net(3, seed=1), random_feature_net(3, seed=1), random_feature_net(3, seed=2)
    fa, pa = extract(a, images)
    assert pa is None and fa.shape == (6, 128)
    np.testing.assert_array_equal(fa, extract(b, images)[0])
    assert not np.allclose(fa, extract(c, images)[0])
    with pytest.raises(RuntimeError, match="no classification head"):
        a(torch.zeros(1, 3, 12, 12))
    save_feature_net(a, tmp_path / "random.safetensors", {})
    net, meta = load_feature_net(tmp_path / "random.safetensors")
    assert meta == {} and net.head is None
    np.testing.assert_array_equal(fa, extract(net, images)[0])


def test_extract_takes_grayscale_and_rgb_of_any_size():
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, (5, 8, 8), dtype=np.uint8)
    feats, _ = extract(random_feature_net(1), gray, batch_size=2)
    assert feats.shape == (5, 128)
    # (N, H, W) and (N, H, W, 1) are the same images
    np.testing.assert_array_equal(feats, extract(random_feature_net(1), gray[..., None], batch_size=2)[0])
    rgb = rng.integers(0, 256, (3, 20, 14, 3), dtype=np.uint8)
    assert extract(random_feature_net(3), rgb)[0].shape == (3, 128)
    # batching does not change a feature: GroupNorm, not BatchNorm
    np.testing.assert_allclose(
        extract(random_feature_net(3), rgb, batch_size=1)[0], extract(random_feature_net(3), rgb)[0], rtol=1e-5, atol=1e-6
    )

    with pytest.raises(ValueError, match="3-channel"):
        extract(random_feature_net(3), gray)
    with pytest.raises(ValueError, match="at least 8"):
        extract(random_feature_net(1), rng.integers(0, 256, (2, 6, 6), dtype=np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        extract(random_feature_net(1), gray.astype(np.float32))


def test_training_is_deterministic_per_seed():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (40, 8, 8), dtype=np.uint8)
    labels = rng.integers(0, 3, 40)
    nets = [train_classifier(images, labels, 3, seed=s, steps=3, batch_size=16, threads=1) for s in (0, 0, 1)]
    f0, f1, f2 = (extract(n, images)[0] for n in nets)
    np.testing.assert_array_equal(f0, f1)
    assert not np.allclose(f0, f2)
    assert isinstance(nets[0], FeatureNet)
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        train_classifier(images, labels, 2, steps=1)
