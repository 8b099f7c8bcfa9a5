"""95% bootstrap confidence intervals for the headline metrics, from per-sample predictions.

Samples are resampled with replacement and the corpus-level metric recomputed each time (percentile
interval). The statistics here are small numpy versions of the torchmetrics ones, checked against
scikit-learn in the tests.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from dentvlm.metrics.classification import multi_hot
from dentvlm.predictions import Prediction


def bootstrap_interval(values: Sequence, statistic: Callable[[np.ndarray], float], resamples: int = 1000,
                       seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of `statistic(indices)` over resampled index arrays."""
    n = len(values)
    if n == 0 or resamples < 1:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    stats = [statistic(rng.integers(0, n, n)) for _ in range(resamples)]
    alpha = (1 - level) / 2
    return float(np.quantile(stats, alpha)), float(np.quantile(stats, 1 - alpha))


def macro_f1(pred: np.ndarray, true: np.ndarray) -> float:
    """Macro F1 over the columns of multi-hot (samples, classes) arrays; 0 where undefined."""
    tp = (pred & true).sum(0)
    fp = (pred & ~true).sum(0)
    fn = (~pred & true).sum(0)
    denominator = 2 * tp + fp + fn
    f1 = np.where(denominator > 0, 2 * tp / np.maximum(denominator, 1), 0.0)
    return float(f1.mean())


def classification_intervals(predictions: list[Prediction], classes: Sequence[str], multi_label: bool,
                             resamples: int, seed: int) -> dict[str, tuple[float, float]]:
    pred = np.array([multi_hot(p.parsed_labels, classes) for p in predictions], dtype=bool).reshape(-1, len(classes))
    true = np.array([multi_hot(p.true_labels, classes) for p in predictions], dtype=bool).reshape(-1, len(classes))
    if not multi_label:  # anything but exactly one label is the "unparseable" answer: wrong everywhere
        valid = pred.sum(1) == 1
        pred = pred & valid[:, None]
    parsed = np.array([p.parsed_labels is not None for p in predictions], dtype=bool)
    exact = (pred == true).all(1) & parsed  # an unparseable answer is never right
    name = "subset_accuracy" if multi_label else "accuracy"
    return {
        name: bootstrap_interval(exact, lambda i: float(exact[i].mean()), resamples, seed),
        "macro_f1": bootstrap_interval(exact, lambda i: macro_f1(pred[i], true[i]), resamples, seed),
    }


def report_intervals(predictions: list[Prediction], scores, classes: Sequence[str], resamples: int,
                     seed: int) -> dict[str, tuple[float, float]]:
    """Intervals for METEOR, embedding similarity and clinical finding F1 (`scores`: a `ReportScores`)."""
    if not predictions:
        return {}
    generated, references = [p.generated for p in predictions], [p.reference for p in predictions]
    meteor = np.array([scores.text["meteor"].score(g, r) for g, r in zip(generated, references)])
    similarity = scores.text["embedding_similarity"].pair_scores(generated, references).numpy()
    pred = np.array([multi_hot(p.parsed_labels, classes) for p in predictions], dtype=bool)
    true = np.array([multi_hot(p.true_labels, classes) for p in predictions], dtype=bool)
    return {
        "meteor": bootstrap_interval(meteor, lambda i: float(meteor[i].mean()), resamples, seed),
        "embedding_similarity": bootstrap_interval(similarity, lambda i: float(similarity[i].mean()), resamples, seed),
        "finding_macro_f1": bootstrap_interval(pred, lambda i: macro_f1(pred[i], true[i]), resamples, seed),
    }
