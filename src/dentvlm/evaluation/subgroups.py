"""Headline metrics per subgroup of patients (gender, age band, visit type, radiographs, photographs; see
`dentvlm.data.groups`): does the model serve every group alike?

Per value of each group: the number of test checkups, and, when there are at least `min_group_size`, the
subset accuracy (single-label: accuracy) and macro F1 of the generated answers and the macro AUROC of the
class probabilities (over the classes with both truth values in the group), each with a 95% bootstrap
interval over the group's checkups. Smaller groups are listed with their count and "too few to score": an
interval over a handful of checkups says little and a gap to it would mislead. The largest gap between scored
groups of each kind is named; "unknown" (unreadable record text) is scored but left out of the gaps, since it
is no group of patients.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from dentvlm.data.groups import AGE_BANDS, GROUP_NAMES
from dentvlm.evaluation.bootstrap import bootstrap_intervals, macro_f1
from dentvlm.evaluation.clinical_data import Scored, interval, not_available, number
from dentvlm.evaluation.discrimination import auroc_defined, macro_auroc

AGE_ORDER = [name for _, _, name in AGE_BANDS]


def _value_order(value: str) -> tuple:
    """Age bands young to old, other values alphabetically, "unknown" last."""
    return value == "unknown", AGE_ORDER.index(value) if value in AGE_ORDER else len(AGE_ORDER), value


def metric_names(multi_label: bool) -> tuple[str, str, str]:
    return ("subset_accuracy" if multi_label else "accuracy"), "macro_f1", "macro_auroc"


def group_scores(test: Scored, mask: np.ndarray, multi_label: bool, min_size: int, resamples: int,
                 seed: int) -> dict:
    """The metrics of the test checkups in `mask`, or their count and why they are not scored."""
    n = int(mask.sum())
    if n < min_size:
        return {"n": n, "not_scored": f"too few to score (n < {min_size})"}
    answers, truth, exact = test.answers[mask], test.truth[mask], test.exact[mask]
    probabilities = test.probabilities[mask] if test.probabilities is not None else None
    classes = auroc_defined(truth)

    def values(i: np.ndarray) -> np.ndarray:
        scores = [exact[i].mean(), macro_f1(answers[i], truth[i])]
        if probabilities is not None:
            scores.append(macro_auroc(probabilities[i], truth[i], classes))
        return np.array(scores)

    point = values(np.arange(n))
    bounds = bootstrap_intervals(n, values, resamples, seed) if resamples else None
    names = metric_names(multi_label)[:len(point)]
    row = {"n": n, **{name: number(point[k]) for k, name in enumerate(names)},
           "ci": {name: interval(None if bounds is None else bounds[k]) for k, name in enumerate(names)}}
    if probabilities is None:
        row["macro_auroc"] = None
    return row


def largest_gaps(rows: dict[str, dict], names: Sequence[str]) -> dict:
    """Per metric, the scored groups (not "unknown") with the highest and the lowest value, when two exist."""
    gaps = {}
    for name in names:
        have = [(row[name], value, row["n"]) for value, row in rows.items()
                if value != "unknown" and row.get(name) is not None]
        if len(have) >= 2:
            high, low = max(have), min(have)
            gaps[name] = {"gap": high[0] - low[0], "high": {"group": high[1], "value": high[0], "n": high[2]},
                          "low": {"group": low[1], "value": low[0], "n": low[2]}}
    return gaps


def subgroup_metrics(test: Scored, multi_label: bool, min_size: int, resamples: int, seed: int) -> dict:
    """metrics.json's ``subgroups`` entry of one variant's test split."""
    present = [key for p in test.predictions for key in (p.groups or {})]
    if not present:
        return not_available("the predictions carry no subgroups")
    kinds = [kind for kind in dict.fromkeys([*GROUP_NAMES, *present]) if kind in present]
    groups = {}
    for kind in kinds:
        values = np.array([(p.groups or {}).get(kind, "unknown") for p in test.predictions])
        groups[kind] = {value: group_scores(test, values == value, multi_label, min_size, resamples, seed)
                        for value in sorted(set(values.tolist()), key=_value_order)}
    out = {"min_group_size": min_size, "groups": groups,
           "largest_gaps": {kind: largest_gaps(rows, metric_names(multi_label)) for kind, rows in groups.items()}}
    if test.probabilities is None:
        out["macro_auroc_not_available"] = test.missing
    return out
