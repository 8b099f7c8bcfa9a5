"""95% bootstrap confidence intervals for the headline metrics, from per-sample predictions.

Samples are resampled with replacement and the corpus-level metric recomputed each time (percentile
interval). The statistics here are small numpy versions of the torchmetrics ones, checked against
scikit-learn in the tests. `bootstrap_intervals` serves statistics with several values per resample (per-class
AUROC, see `dentvlm.evaluation.clinical`), some of which a resample may leave undefined.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from dentvlm.metrics.classification import multi_hot
from dentvlm.predictions import Prediction


def bootstrap_interval(values: Sequence, statistic: Callable[[np.ndarray], float], resamples: int = 1000,
                       seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of `statistic(indices)` over resampled index arrays."""
    if len(values) == 0 or resamples < 1:
        return float("nan"), float("nan")
    low, high = bootstrap_intervals(len(values), statistic, resamples, seed, level)[0]
    return float(low), float(high)


def bootstrap_intervals(n: int, statistic: Callable[[np.ndarray], np.ndarray | float], resamples: int = 1000,
                        seed: int = 0, level: float = 0.95) -> np.ndarray:
    """Percentile intervals, shape (values, 2), of a statistic that returns one or more values per resampled
    index array (n samples drawn with replacement from `n`).

    A value may be NaN on a resample where it is undefined (AUROC of a class the resample holds no positive
    of): it is left out of that value's interval rather than scored as 0, and an interval that no resample
    defines is NaN. The same seed draws the same resamples for every statistic, so intervals of one results
    folder come from the same resampled test sets.
    """
    rng = np.random.default_rng(seed)
    stats = np.array([np.atleast_1d(statistic(rng.integers(0, n, n))) for _ in range(resamples)], dtype=float)
    alpha = (1 - level) / 2
    intervals = np.full((stats.shape[1], 2), np.nan)
    for column, values in enumerate(stats.T):
        defined = values[~np.isnan(values)]
        if len(defined):
            intervals[column] = np.quantile(defined, alpha), np.quantile(defined, 1 - alpha)
    return intervals


def macro_f1(pred: np.ndarray, true: np.ndarray) -> float:
    """Macro F1 over the columns of multi-hot (samples, classes) arrays; 0 where undefined."""
    tp = (pred & true).sum(0)
    fp = (pred & ~true).sum(0)
    fn = (~pred & true).sum(0)
    denominator = 2 * tp + fp + fn
    f1 = np.where(denominator > 0, 2 * tp / np.maximum(denominator, 1), 0.0)
    return float(f1.mean())


def answer_arrays(predictions: list[Prediction], classes: Sequence[str],
                  multi_label: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(answers, truth, exact): the generated answers and the references as multi-hot (samples, classes)
    arrays, and whether each answer is exactly right, under `ClassificationScores`' rules: an unparseable
    answer is never right, and in the single-label task an answer with other than one label is wrong
    everywhere. Shared by the headline intervals and the clinical metrics, so both score answers alike."""
    pred = np.array([multi_hot(p.parsed_labels, classes) for p in predictions], dtype=bool).reshape(-1, len(classes))
    true = np.array([multi_hot(p.true_labels, classes) for p in predictions], dtype=bool).reshape(-1, len(classes))
    if not multi_label:
        valid = pred.sum(1) == 1
        pred = pred & valid[:, None]
    parsed = np.array([p.parsed_labels is not None for p in predictions], dtype=bool)
    return pred, true, (pred == true).all(1) & parsed


def classification_intervals(predictions: list[Prediction], classes: Sequence[str], multi_label: bool,
                             resamples: int, seed: int) -> dict[str, tuple[float, float]]:
    pred, true, exact = answer_arrays(predictions, classes, multi_label)
    name = "subset_accuracy" if multi_label else "accuracy"
    if len(exact) == 0 or resamples < 1:
        return {name: (float("nan"), float("nan")), "macro_f1": (float("nan"), float("nan"))}
    # both statistics from one pass over the resamples (the same ones that two passes with one seed draw)
    both = bootstrap_intervals(len(exact), lambda i: (exact[i].mean(), macro_f1(pred[i], true[i])), resamples, seed)
    return {name: tuple(map(float, both[0])), "macro_f1": tuple(map(float, both[1]))}


def report_intervals(predictions: list[Prediction], scores, classes: Sequence[str], resamples: int,
                     seed: int) -> dict[str, tuple[float, float]]:
    """Intervals for METEOR, embedding similarity and clinical finding F1 (`scores`: a `ReportScores`)."""
    if not predictions:
        return {}
    generated, references = [p.generated for p in predictions], [p.reference for p in predictions]
    meteor = np.array([scores.text["meteor"].score(g, r) for g, r in zip(generated, references)])
    similarity = scores.text["embedding_similarity"].pair_scores(generated, references).numpy()
    pred, true, _ = answer_arrays(predictions, classes, multi_label=True)
    return {
        "meteor": bootstrap_interval(meteor, lambda i: float(meteor[i].mean()), resamples, seed),
        "embedding_similarity": bootstrap_interval(similarity, lambda i: float(similarity[i].mean()), resamples, seed),
        "finding_macro_f1": bootstrap_interval(pred, lambda i: macro_f1(pred[i], true[i]), resamples, seed),
    }
