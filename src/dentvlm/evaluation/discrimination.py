"""Discrimination from per-class probabilities: AUROC and average precision (AP), one-vs-rest per class on
the multi-hot truth (which covers the single-label task: its truth is one-hot), per class and macro, with 95%
bootstrap intervals (checkups resampled, everything recomputed).

AUROC needs both truth values in a class and AP needs a positive; otherwise the class's value is not defined
(None in metrics.json, "n/a" in tables) and named, never the 0 that torchmetrics returns for it. The macro
values average the classes defined on the whole test split; a resample that leaves one of them undefined
does not count towards the macro interval (nor towards that class's own).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torchmetrics.functional.classification import binary_auroc, binary_average_precision

from dentvlm.evaluation.bootstrap import bootstrap_intervals
from dentvlm.evaluation.clinical_data import interval, number


def auroc_defined(truth: np.ndarray) -> np.ndarray:
    """Per class: both truth values occur."""
    return truth.any(0) & ~truth.all(0)


def discrimination_values(probabilities: np.ndarray, truth: np.ndarray, auroc_classes: np.ndarray,
                          ap_classes: np.ndarray) -> np.ndarray:
    """[AUROC per class, AP per class, macro AUROC, macro AP] of the classes in `auroc_classes` and
    `ap_classes` (masks); NaN for the others and for a class this sample leaves undefined, and a macro value
    is NaN when one of its classes is."""
    n = truth.shape[1]
    values = np.full(2 * n + 2, np.nan)
    preds, target = torch.from_numpy(probabilities), torch.from_numpy(truth.astype(np.int64))
    auroc_here, ap_here = auroc_classes & auroc_defined(truth), ap_classes & truth.any(0)
    for c in range(n):
        if auroc_here[c]:
            values[c] = binary_auroc(preds[:, c], target[:, c], validate_args=False)
        if ap_here[c]:
            values[n + c] = binary_average_precision(preds[:, c], target[:, c], validate_args=False)
    if auroc_classes.any():
        values[2 * n] = values[:n][auroc_classes].mean()
    if ap_classes.any():
        values[2 * n + 1] = values[n:2 * n][ap_classes].mean()
    return values


def macro_auroc(probabilities: np.ndarray, truth: np.ndarray, classes: np.ndarray) -> float:
    """Macro AUROC over the classes in the mask `classes` (NaN when one of them is undefined here)."""
    n = truth.shape[1]
    return float(discrimination_values(probabilities, truth, classes, np.zeros(n, dtype=bool))[2 * n])


def discrimination(probabilities: np.ndarray, truth: np.ndarray, classes: Sequence[str], resamples: int,
                   seed: int) -> dict:
    """metrics.json's ``discrimination`` entry of one variant's test split."""
    auroc_classes, ap_classes = auroc_defined(truth), truth.any(0)
    point = discrimination_values(probabilities, truth, auroc_classes, ap_classes)
    bounds = None
    if resamples:
        bounds = bootstrap_intervals(len(truth), lambda i: discrimination_values(
            probabilities[i], truth[i], auroc_classes, ap_classes), resamples, seed)
    n = len(classes)

    def entry(auroc: int, ap: int, counts: dict) -> dict:
        return {"auroc": number(point[auroc]), "average_precision": number(point[ap]), **counts,
                "ci": {"auroc": interval(None if bounds is None else bounds[auroc]),
                       "average_precision": interval(None if bounds is None else bounds[ap])}}

    per_class = {c: entry(k, n + k, {"positives": int(truth[:, k].sum()), "negatives": int((~truth[:, k]).sum())})
                 for k, c in enumerate(classes)}
    return {
        "per_class": per_class,
        "macro": entry(2 * n, 2 * n + 1, {"auroc_classes": int(auroc_classes.sum()),
                                          "average_precision_classes": int(ap_classes.sum())}),
        "auroc_not_defined": [c for c, ok in zip(classes, auroc_classes) if not ok],
        "average_precision_not_defined": [c for c, ok in zip(classes, ap_classes) if not ok],
    }
