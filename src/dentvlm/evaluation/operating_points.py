"""Operating points: sensitivity, specificity, PPV and NPV per class (and their macro means) where a
decision is made, at

- the generated answers: the parsed labels are the decision;
- thresholds chosen per class on the validation split and applied unchanged to the test split (choosing
  them on the test split would flatter every number below): Youden's J (the validation ROC point with the
  largest sensitivity + specificity - 1), and a target sensitivity (the highest threshold whose validation
  sensitivity is at least the target: the most specific one that still finds that share of the condition,
  torchmetrics' `binary_specificity_at_sensitivity`).

A probability at or above a threshold is a positive, as on torchmetrics' and scikit-learn's ROC curves; of
tied thresholds the higher one is chosen. A ratio with nothing to count (PPV when nothing is called positive)
is not defined, None rather than 0, and a macro mean averages the classes where it is defined.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torchmetrics.functional.classification import (
    binary_roc,
    binary_specificity_at_sensitivity,
    multilabel_stat_scores,
)

from dentvlm.evaluation.clinical_data import Scored, not_available

RATES = ("sensitivity", "specificity", "ppv", "npv")
ONE_VALUED = "the validation split has only one truth value of this class"


def _ratio(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def rates(decision: np.ndarray, truth: np.ndarray, classes: Sequence[str],
          thresholds: Sequence[float | None] | None = None) -> dict:
    """Per class and macro rates of a multi-hot `decision` against `truth`, with each class's threshold (None
    for the generated answers; a class whose threshold is None has no rates and says why)."""
    preds, target = torch.from_numpy(decision.astype(np.int64)), torch.from_numpy(truth.astype(np.int64))
    stats = multilabel_stat_scores(preds, target, num_labels=len(classes), average=None,
                                   validate_args=False).reshape(-1, 5)
    per_class = {}
    for k, c in enumerate(classes):
        tp, fp, tn, fn = (int(x) for x in stats[k, :4])
        threshold = thresholds[k] if thresholds is not None else None
        if thresholds is not None and threshold is None:
            per_class[c] = {"threshold": None, **dict.fromkeys(RATES), **not_available(ONE_VALUED)}
            continue
        per_class[c] = {"threshold": threshold, "sensitivity": _ratio(tp, tp + fn), "specificity": _ratio(tn, tn + fp),
                        "ppv": _ratio(tp, tp + fp), "npv": _ratio(tn, tn + fn), "tp": tp, "fp": fp, "tn": tn, "fn": fn}
    macro = {}
    for name in RATES:
        defined = [row[name] for row in per_class.values() if row[name] is not None]
        macro[name] = float(np.mean(defined)) if defined else None
    return {"per_class": per_class, "macro": macro}


def youden_threshold(probabilities: np.ndarray, truth: np.ndarray) -> float | None:
    """The threshold maximising sensitivity + specificity - 1 on (validation) data; None for one truth value."""
    if truth.all() or not truth.any():
        return None
    fpr, tpr, thresholds = binary_roc(torch.from_numpy(probabilities), torch.from_numpy(truth.astype(np.int64)),
                                      validate_args=False)
    # the first point is the (0, 0) corner torchmetrics adds at threshold 1, not a threshold of the data
    return float(thresholds[1:][torch.argmax((tpr - fpr)[1:])])


def sensitivity_threshold(probabilities: np.ndarray, truth: np.ndarray, target: float) -> float | None:
    """The highest threshold with sensitivity >= `target` on (validation) data; None for one truth value."""
    if truth.all() or not truth.any():
        return None
    _, threshold = binary_specificity_at_sensitivity(torch.from_numpy(probabilities),
                                                     torch.from_numpy(truth.astype(np.int64)), target,
                                                     validate_args=False)
    return float(threshold)


def chosen_thresholds(val: Scored, target: float | None) -> list[float | None]:
    """Per class, Youden's threshold (`target` None) or the target-sensitivity one, from the validation split."""
    columns = zip(val.probabilities.T, val.truth.T)
    if target is None:
        return [youden_threshold(p, t) for p, t in columns]
    return [sensitivity_threshold(p, t, target) for p, t in columns]


def threshold_unavailable(test: Scored, val: Scored) -> str | None:
    """Why thresholds from the validation split cannot be applied to this variant's test split, if so."""
    if test.probabilities is None:
        return f"test split: {test.missing}"
    if not val.predictions:
        return "no validation-split predictions for this variant (thresholds are chosen on the validation split)"
    if val.probabilities is None:
        return f"validation split: {val.missing}"
    return None


def operating_points(test: Scored, val: Scored, classes: Sequence[str], target: float) -> dict:
    """metrics.json's ``operating_points`` entry: the generated answers, Youden and target sensitivity."""
    points = {"generated_answers": rates(test.answers, test.truth, classes)}
    why = threshold_unavailable(test, val)
    for name, goal in (("youden", None), ("target_sensitivity", target)):
        if why:
            points[name] = not_available(why)
            continue
        thresholds = chosen_thresholds(val, goal)
        decision = np.stack([test.probabilities[:, k] >= (t if t is not None else np.inf)
                             for k, t in enumerate(thresholds)], 1)
        points[name] = rates(decision, test.truth, classes, thresholds)
    points["target_sensitivity"]["target"] = target
    return points
