"""The arrays the clinical metrics are computed from (`dentvlm.evaluation.clinical`), and how their values go
into metrics.json: a value that is not defined is None (JSON has no NaN), a metric that cannot be computed
at all is ``{"not_available": "<why>"}``; never a 0 in their place."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from dentvlm.evaluation.bootstrap import answer_arrays
from dentvlm.predictions import Prediction

NO_PROBABILITIES = ("no class probabilities (the variant was not scored, or its endpoint returns no "
                    "log-probabilities)")


@dataclass
class Scored:
    """One split of one variant's classification predictions as (checkups, classes) arrays.

    Attributes:
        predictions: The predictions, in row order.
        answers: The generated answers as a multi-hot decision (see `answer_arrays`).
        truth: The reference labels, multi-hot (the single-label task's truth is one-hot).
        exact: Whether each answer is exactly right.
        probabilities: The model's probability of each class; None unless every checkup has one for every
            class (scoring the checkups that happen to have them would describe another test set).
        missing: Why `probabilities` is None.
    """

    predictions: list[Prediction]
    answers: np.ndarray
    truth: np.ndarray
    exact: np.ndarray
    probabilities: np.ndarray | None
    missing: str | None


def scored(predictions: list[Prediction], classes: Sequence[str], multi_label: bool) -> Scored:
    answers, truth, exact = answer_arrays(predictions, classes, multi_label)
    rows = [_probability_row(p.class_probabilities, classes) for p in predictions]
    lacking = sum(row is None for row in rows)
    if not predictions or lacking == len(rows):
        return Scored(predictions, answers, truth, exact, None, NO_PROBABILITIES)
    if lacking:
        why = f"{lacking} of {len(rows)} checkups have no class probability for every class"
        return Scored(predictions, answers, truth, exact, None, why)
    return Scored(predictions, answers, truth, exact, np.array(rows, dtype=np.float64), None)


def _probability_row(probabilities: dict[str, float] | None, classes: Sequence[str]) -> list[float] | None:
    """A checkup's probabilities in class order; None when any class lacks a finite one."""
    if not probabilities:
        return None
    row = [probabilities.get(c) for c in classes]
    if any(value is None or not np.isfinite(value) for value in row):
        return None
    return [float(value) for value in row]


def number(value) -> float | None:
    """A float for metrics.json; None for an undefined (NaN) value."""
    value = float(value)
    return None if np.isnan(value) else value


def interval(bounds) -> list[float] | None:
    """A [low, high] bootstrap interval for metrics.json; None when there is none (no resamples, or undefined)."""
    if bounds is None or np.isnan(bounds[0]):
        return None
    return [float(bounds[0]), float(bounds[1])]


def not_available(reason: str) -> dict:
    return {"not_available": reason}
