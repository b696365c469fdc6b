"""The ``image`` evaluator: Fréchet distance, KID, precision/recall, memorisation and classes, fully offline.

No Inception weights exist here, so the features come from a network of our own, said in
every report (metric ``features``):

- data with labels (the digits, CIFAR-10, a folder with class sub-folders): a small CNN
  classifier trained on the reference's training images (``features.py``), its 128
  penultimate units the features; its accuracy on the reference test images is reported
  (``classifier_accuracy``), and it also labels the samples (class histogram, confidence,
  and whether a sample shows the class it was asked for).
- data without labels: a fixed, seeded random-weight CNN (random features keep distances
  between image distributions meaningful, but are less sensitive than trained ones).

Feature dimensions that are dead on the real images are dropped and the rest standardised
(else the Fréchet distance explodes). Every metric is also measured real-vs-real — as many
real training images as there are samples, against the same test images — as its ``floor``.
Memorisation: the distance (per-pixel RMS) of each sample to its nearest training image,
against that of held-out test images (``nn_ratio`` well below 1 means copies).

The trained feature network is cached beside the reference data (keyed by its content and
the settings), so evaluating several runs on the same data trains it once.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
from pydantic import Field

from genforge.core import DataError, Evaluation, Evaluator, EvaluatorConfig, Metric, Reference, Samples
from genforge.core.kinds import Images

from . import features as feats
from . import metrics, plots

FEATURES_VERSION = "image-features-1"
# below this held-out accuracy the feature classifier's space lets junk read as real: its figures are marked unreliable
RELIABLE_ACCURACY = 0.9


class ImageEvalConfig(EvaluatorConfig):
    features: Literal["auto", "classifier", "random"] = Field(
        "auto", description="auto: a classifier trained on the reference when it has labels, else a fixed random-weight CNN"
    )
    classifier_steps: int = Field(600, ge=1, description="training steps of the feature classifier (cached per reference)")
    max_samples: int = Field(10_000, ge=10, description="samples scored (a random subset beyond this)")
    max_reference: int = Field(10_000, ge=10, description="reference test images used (a random subset beyond this)")
    kid_subset: int = Field(1000, ge=10, description="subset size of the KID estimate")
    k: int = Field(3, ge=1, description="neighbours that set the radii of precision and recall (Kynkäänniemi et al. 2019)")
    grid: int = Field(80, ge=0, description="samples in the picture (0: none)")
    pairs: int = Field(8, ge=0, description="nearest-training-neighbour pairs in the picture")
    seed: int = Field(0, ge=0)


def _load(path: Path, max_n: int, seed: int) -> tuple[np.ndarray, np.ndarray | None, list[str]]:
    """(images, labels or None, class names) of an images file or folder, at most ``max_n`` (a seeded random subset)."""
    images = Images().load(path)
    labels, classes = None, []
    if Path(path).suffix == ".npz":
        with np.load(path) as z:
            if "labels" in z.files and (z["labels"] >= 0).all():
                labels = z["labels"]
            classes = [str(c) for c in z["classes"]] if "classes" in z.files else []
    if len(images) > max_n:
        pick = np.sort(np.random.default_rng(seed).choice(len(images), max_n, replace=False))
        images, labels = images[pick], labels[pick] if labels is not None else None
    return images, labels, classes


def _channels(images: np.ndarray) -> int:
    return 1 if images.ndim == 3 else images.shape[-1]


class ImageEvaluator(Evaluator):
    name: ClassVar[str] = "image"
    kinds: ClassVar[tuple[str, ...]] = ("images",)
    Config: ClassVar[type[ImageEvalConfig]] = ImageEvalConfig
    description: ClassVar[str] = (
        "Fréchet distance, KID, precision/recall on features of a classifier trained on the reference; memorisation; class histogram"
    )

    def evaluate(self, samples: Samples, reference: Reference, out_dir: Path, config: ImageEvalConfig) -> Evaluation:
        fake, asked, _ = _load(samples.path, config.max_samples, config.seed)
        test, test_labels, classes = _load(reference.test, config.max_reference, config.seed)
        if reference.train is not None:
            train_path = Path(reference.train)
            train, train_labels, _ = _load(train_path, 10**9, config.seed)
        else:  # one reference set only: half of it stands in for the training images (classifier, floor, memorisation)
            train_path = Path(out_dir) / "reference-half"  # the feature network is kept in out_dir
            half = np.random.default_rng(config.seed).permutation(len(test))
            keep, other = np.sort(half[: len(test) // 2]), np.sort(half[len(test) // 2 :])
            train, train_labels = test[other], (test_labels[other] if test_labels is not None else None)
            test, test_labels = test[keep], (test_labels[keep] if test_labels is not None else None)
        if fake.shape[1:] != test.shape[1:]:
            raise DataError(
                f"the samples are {fake.shape[1:]} images, the reference {test.shape[1:]}; generate at the reference's size and colour"
            )
        if len(fake) <= config.k or len(test) <= config.k:
            raise DataError(
                f"{len(fake)} sample(s) and {len(test)} reference image(s): the image metrics need more than evaluate.image.k={config.k} of each (raise sample.n)"
            )

        net, kind, accuracy = self.feature_net(train, train_labels, classes, test, test_labels, train_path, out_dir, config)
        f_fake, p_fake = feats.extract(net, fake)
        f_test, p_test = feats.extract(net, test)
        rng = np.random.default_rng(config.seed)
        floor_pick = np.sort(rng.choice(len(train), min(len(fake), len(train)), replace=False))
        f_floor, _ = feats.extract(net, train[floor_pick])
        space = metrics.FeatureSpace(f_test)
        a, b, r = space.apply(f_fake), space.apply(f_floor), space.apply(f_test)

        out: list[Metric] = []

        def add(name: str, value: float, floor: float | None, higher: bool | None, text: str) -> None:
            out.append(Metric(name, float(value), higher, None if floor is None else float(floor), text))

        add(
            "fd",
            metrics.frechet_distance(a, r),
            metrics.frechet_distance(b, r),
            False,
            f"Fréchet distance of {kind} features, samples vs reference test images (floor: as many real training images)",
        )
        add(
            "kid",
            metrics.kid(a, r, config.kid_subset, seed=config.seed),
            metrics.kid(b, r, config.kid_subset, seed=config.seed),
            False,
            "kernel distance (KID, cubic polynomial kernel) on the same features",
        )
        prec, rec = metrics.precision_recall(r, a, config.k)
        fprec, frec = metrics.precision_recall(r, b, config.k)
        add("precision", prec, fprec, True, "share of samples inside the real images' feature manifold (Kynkäänniemi et al. 2019)")
        add("recall", rec, frec, True, "share of real images inside the samples' feature manifold")

        px_train = metrics.pixel_vectors(train)
        d_fake, nn_idx = metrics.nearest(metrics.pixel_vectors(fake), px_train)
        d_test, _ = metrics.nearest(metrics.pixel_vectors(test), px_train)
        add(
            "nn_distance",
            d_fake.mean(),
            d_test.mean(),
            None,
            "mean per-pixel RMS distance of a sample to its nearest training image (floor: held-out test images)",
        )
        add(
            "nn_ratio",
            d_fake.mean() / max(d_test.mean(), 1e-12),
            1.0,
            None,
            "nn_distance / that of test images: well below 1 means copies of the training set (about 1 is right)",
        )
        add("samples", len(fake), None, None, "images scored")

        if p_fake is not None:
            add(
                "classifier_accuracy",
                accuracy,
                None,
                True,
                f"accuracy of the feature classifier on the reference test images ({len(test)})",
            )
            pred = p_fake.argmax(1)
            share = np.bincount(pred, minlength=len(classes)) / len(pred)
            real_share = np.bincount(p_test.argmax(1), minlength=len(classes)) / len(p_test)
            add(
                "confidence",
                p_fake.max(1).mean(),
                p_test.max(1).mean(),
                True,
                "the classifier's mean top-class probability on samples (floor: on real test images)",
            )
            add("class_max_share", share.max(), real_share.max(), None, "share of the most frequent class as the classifier labels samples")
            add(
                "classes_covered",
                int((share > 0).sum()),
                int((real_share > 0).sum()),
                True,
                f"classes the classifier finds among the samples (of {len(classes)})",
            )
            if asked is not None and len(asked) == len(pred):
                add(
                    "label_agreement",
                    (pred == asked).mean(),
                    (p_test.argmax(1) == test_labels).mean() if test_labels is not None else None,
                    True,
                    "share of samples the classifier labels as the class they were drawn for (floor: its test accuracy)",
                )
            figures_classes = (classes, share, real_share)
        else:
            figures_classes = None

        out_dir.mkdir(parents=True, exist_ok=True)
        figures = {}
        if config.grid:
            figures["samples"] = plots.sample_grid(
                fake[: config.grid], asked[: config.grid] if asked is not None else None, classes, out_dir / "samples.png"
            )
        if config.pairs:
            figures["neighbours"] = plots.neighbour_pairs(fake, train, d_fake, nn_idx, d_test, config.pairs, out_dir / "neighbours.png")
        if figures_classes is not None:
            figures["classes"] = plots.class_histogram(*figures_classes, out_dir / "classes.png")
        notes = []
        reliable = kind == "classifier" and np.isfinite(accuracy) and accuracy >= RELIABLE_ACCURACY
        if not reliable:
            why = (
                f"the feature classifier labels only {accuracy:.0%} of the held-out real images right (below {RELIABLE_ACCURACY:.0%})"
                if kind == "classifier" and np.isfinite(accuracy)
                else "the features are a random-weight CNN's (the reference has no labels)"
                if kind == "random"
                else "the feature classifier's accuracy could not be measured (the test images have no labels)"
            )
            notes.append(
                f"{why}: fd, kid, precision and recall on its features are unreliable (pictures that look like nothing can read "
                "as real); raise evaluate.image.classifier_steps, and look at the samples themselves"
            )
        if p_fake is not None and p_fake.max(1).mean() > p_test.max(1).mean() + 0.05:
            notes.append(
                f"the classifier is more confident on the samples ({p_fake.max(1).mean():.2f}) than on real test images "
                f"({p_test.max(1).mean():.2f}): its confidence and label agreement flatter the samples"
            )
        add(
            "features_reliable",
            float(reliable),
            None,
            True,
            f"1 when the feature classifier's held-out accuracy is {RELIABLE_ACCURACY:.0%} or more",
        )
        out.append(
            Metric(
                "features",
                {"classifier": 1.0, "random": 0.0}[kind],
                None,
                None,
                f"features: {'a CNN classifier trained on the reference training images' if kind == 'classifier' else 'a fixed random-weight CNN (the reference has no labels)'} (1 = classifier, 0 = random)",
            )
        )
        return Evaluation(self.name, out, figures, notes=notes)

    def feature_net(self, train, train_labels, classes, test, test_labels, train_path: Path, out_dir: Path, config: ImageEvalConfig):
        """(network, "classifier" or "random", its test accuracy or NaN); a trained one is cached beside the reference."""
        want = config.features
        if want == "auto":
            want = "classifier" if train_labels is not None and len(classes) >= 2 else "random"
        if want == "classifier" and (train_labels is None or len(classes) < 2):
            raise DataError("evaluate.image.features=classifier needs a reference with two or more classes (labels); use auto or random")
        if want == "random":
            return feats.random_feature_net(_channels(train), seed=config.seed), "random", float("nan")
        key = hashlib.sha256(
            train.tobytes() + train_labels.tobytes() + repr((FEATURES_VERSION, config.classifier_steps, config.seed)).encode()
        ).hexdigest()[:16]
        cache = train_path.parent / f"feature-net-{key}.safetensors"
        if cache.exists():
            net, meta = feats.load_feature_net(cache)
            return net, "classifier", float(meta.get("accuracy", "nan"))
        net = feats.train_classifier(train, train_labels, len(classes), seed=config.seed, steps=config.classifier_steps)
        accuracy = float("nan")
        if test_labels is not None:
            _, p = feats.extract(net, test)
            accuracy = float((p.argmax(1) == test_labels).mean())
        try:
            feats.save_feature_net(net, cache, {"accuracy": accuracy, "classes": classes})
        except OSError:  # a read-only reference folder: keep it with this evaluation instead
            out_dir.mkdir(parents=True, exist_ok=True)
            feats.save_feature_net(net, out_dir / cache.name, {"accuracy": accuracy, "classes": classes})
        return net, "classifier", accuracy
