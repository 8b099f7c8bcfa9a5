"""Clinical-grade metrics of one variant's classification predictions, from the per-class probabilities
(`Prediction.class_probabilities`): the numbers a dentist or a regulator asks for.

- discrimination: AUROC and average precision per class and macro, with bootstrap intervals
  (`dentvlm.evaluation.discrimination`);
- operating points: sensitivity, specificity, PPV, NPV at the generated answers and at thresholds chosen on
  the validation split (`dentvlm.evaluation.operating_points`);
- calibration: expected calibration error per class and pooled over classes, and the pooled reliability
  diagram's bins (below);
- subgroups: the headline metrics per group of patients (`dentvlm.evaluation.subgroups`);
- agreement: how often the probabilities, thresholded at 0.5, say what the generated answer says.

Only test-split predictions are scored; validation-split ones (`Prediction.split == "val"`) serve only to
choose thresholds. A variant without probabilities still gets the operating point of its answers and the
subgroup accuracy and F1; everything that needs probabilities says "not available" and why.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torchmetrics.functional.classification import binary_calibration_error, binary_cohen_kappa

from dentvlm.evaluation.clinical_data import not_available, scored
from dentvlm.evaluation.discrimination import discrimination
from dentvlm.evaluation.operating_points import operating_points
from dentvlm.evaluation.subgroups import subgroup_metrics
from dentvlm.predictions import Prediction


@dataclass(frozen=True)
class ClinicalSettings:
    """How the clinical metrics are computed (recorded beside them in metrics.json).

    Attributes:
        target_sensitivity: The validation sensitivity the second operating point must reach.
        min_group_size: Subgroups with fewer test checkups are counted, not scored.
        calibration_bins: Equal-width probability bins of the calibration error and reliability diagram.
        bootstrap: Bootstrap resamples of the 95% intervals (0: none).
        seed: Seed of the bootstrap.
    """

    target_sensitivity: float = 0.9
    min_group_size: int = 20
    calibration_bins: int = 10
    bootstrap: int = 1000
    seed: int = 0

    def __post_init__(self):
        if not 0 < self.target_sensitivity <= 1:
            raise ValueError(f"results.target_sensitivity must be in (0, 1], got {self.target_sensitivity}")
        if self.min_group_size < 1 or self.calibration_bins < 1:
            raise ValueError("results.min_group_size and results.calibration_bins must be at least 1, got "
                             f"{self.min_group_size} and {self.calibration_bins}")

    def to_dict(self) -> dict:
        return asdict(self)


def reliability_bins(probabilities: np.ndarray, truth: np.ndarray, bins: int) -> dict:
    """Per equal-width bin of probability: the mean probability, the observed frequency of the condition and
    the count (None for an empty bin), binned as torchmetrics' calibration error bins them (a probability of
    exactly 1 is counted in the top bin, where torchmetrics gives it a bin of its own)."""
    edges = torch.linspace(0, 1, bins + 1, dtype=torch.float64)
    index = (torch.bucketize(torch.from_numpy(probabilities), edges, right=True) - 1).clamp(max=bins - 1).numpy()
    count = np.bincount(index, minlength=bins)
    total = np.bincount(index, weights=probabilities, minlength=bins)
    positive = np.bincount(index, weights=truth.astype(float), minlength=bins)
    return {"edges": edges.tolist(), "count": count.tolist(),
            "confidence": [float(t / c) if c else None for t, c in zip(total, count)],
            "frequency": [float(p / c) if c else None for p, c in zip(positive, count)]}


def calibration(probabilities: np.ndarray, truth: np.ndarray, classes: Sequence[str], bins: int) -> dict:
    """metrics.json's ``calibration`` entry: ECE (L1, `bins` equal-width bins) per class and pooled over all
    (checkup, class) pairs, and the pooled reliability diagram's bins."""
    preds, target = torch.from_numpy(probabilities), torch.from_numpy(truth.astype(np.int64))

    def ece(p: torch.Tensor, t: torch.Tensor) -> float:
        return float(binary_calibration_error(p, t, n_bins=bins, norm="l1", validate_args=False))

    return {"bins": bins, "binning": "equal-width", "norm": "l1",
            "per_class": {c: ece(preds[:, k].contiguous(), target[:, k].contiguous()) for k, c in enumerate(classes)},
            "pooled": ece(preds.reshape(-1), target.reshape(-1)),
            "reliability": reliability_bins(probabilities.reshape(-1), truth.reshape(-1), bins)}


def agreement(test, classes: Sequence[str], threshold: float = 0.5) -> dict:
    """How often the probabilities, thresholded at `threshold`, say what the generated answer says: per
    class (share of checkups and Cohen's kappa) and for the whole label set, over the checkups whose answer
    parsed (an unparseable answer says nothing to agree with)."""
    parsed = np.array([p.parsed_labels is not None for p in test.predictions])
    if not parsed.any():
        return not_available("no generated answer could be parsed")
    decided = test.probabilities[parsed] >= threshold
    answers = test.answers[parsed].astype(bool)
    same = decided == answers
    kappa = {c: float(binary_cohen_kappa(torch.from_numpy(decided[:, k]).long(),
                                         torch.from_numpy(answers[:, k]).long()))
             for k, c in enumerate(classes)}
    return {"threshold": threshold, "checkups": int(parsed.sum()), "label_set": float(same.all(1).mean()),
            "per_class": {c: float(same[:, k].mean()) for k, c in enumerate(classes)},
            "cohen_kappa": {c: (None if np.isnan(v) else v) for c, v in kappa.items()}}


def clinical_metrics(predictions: list[Prediction], classes: Sequence[str], multi_label: bool,
                     settings: ClinicalSettings) -> dict:
    """metrics.json's ``clinical`` entry of one variant, from all its predictions (test and validation)."""
    mine = [p for p in predictions if p.task == "classification"]
    test = scored([p for p in mine if p.split == "test"], classes, multi_label)
    val = scored([p for p in mine if p.split == "val"], classes, multi_label)
    entry = {"settings": settings.to_dict(), "samples": len(test.predictions), "val_samples": len(val.predictions)}
    if not test.predictions:
        return {**entry, **not_available("no test-split classification predictions")}
    if test.probabilities is None:
        entry["discrimination"] = entry["calibration"] = entry["agreement"] = not_available(test.missing)
    else:
        entry["agreement"] = agreement(test, classes)
        entry["discrimination"] = discrimination(test.probabilities, test.truth, classes, settings.bootstrap,
                                                 settings.seed)
        entry["calibration"] = calibration(test.probabilities, test.truth, classes, settings.calibration_bins)
    entry["operating_points"] = operating_points(test, val, classes, settings.target_sensitivity)
    entry["subgroups"] = subgroup_metrics(test, multi_label, settings.min_group_size, settings.bootstrap,
                                          settings.seed)
    return entry
