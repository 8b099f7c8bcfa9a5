"""Subgroup metrics of the clinical stand-in against plain numpy grouping and scikit-learn: counts, per-group
accuracy, macro F1 and AUROC, the "too few to score" rule and the largest gap."""

import numpy as np
import pytest
from sklearn.metrics import f1_score, roc_auc_score

from dentvlm.evaluation.clinical import ClinicalSettings, clinical_metrics
from tests.unit.clinical_standin import CLASSES, arrays, standin

TEST = standin(200, seed=0)


def grouped(kind: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(group values, exact answers, answers, truth, probabilities) of the stand-in, from the predictions."""
    values = np.array([p.groups[kind] for p in TEST])
    exact = np.array([p.parsed_labels is not None and set(p.parsed_labels) == set(p.true_labels) for p in TEST])
    answers = np.array([[c in (p.parsed_labels or []) for c in CLASSES] for p in TEST])
    probs, truth = arrays(TEST)
    return values, exact, answers, truth, probs


@pytest.fixture(scope="module")
def subgroups():
    return clinical_metrics(TEST, CLASSES, True, ClinicalSettings(bootstrap=0, min_group_size=20))["subgroups"]


@pytest.mark.parametrize("kind", ["gender", "age_band", "visit_type"])
def test_counts_and_scores_per_group(subgroups, kind):
    values, exact, answers, truth, probs = grouped(kind)
    rows = subgroups["groups"][kind]
    assert set(rows) == set(values.tolist())
    assert sum(row["n"] for row in rows.values()) == 200
    for value, row in rows.items():
        mask = values == value
        assert row["n"] == mask.sum(), value
        if mask.sum() < 20:
            assert row == {"n": int(mask.sum()), "not_scored": "too few to score (n < 20)"}
            continue
        assert row["subset_accuracy"] == pytest.approx(exact[mask].mean()), value
        assert row["macro_f1"] == pytest.approx(f1_score(truth[mask], answers[mask], average="macro", zero_division=0))
        defined = [k for k in range(len(CLASSES)) if 0 < truth[mask, k].sum() < mask.sum()]
        expected = np.mean([roc_auc_score(truth[mask, k], probs[mask, k]) for k in defined])
        assert row["macro_auroc"] == pytest.approx(expected, abs=1e-6), value


def test_the_stand_in_has_small_groups(subgroups):
    """The "too few" rule is exercised: the stand-in's under-18s and unknown genders are under 20."""
    assert "not_scored" in subgroups["groups"]["age_band"]["<18"]
    assert "not_scored" in subgroups["groups"]["gender"]["unknown"]
    assert list(subgroups["groups"]["age_band"]) == ["<18", "18-39", "40-59", "60+"]  # young to old


def test_largest_gap_between_scored_groups(subgroups):
    values, exact, *_ = grouped("age_band")
    scored = {v: exact[values == v].mean() for v in set(values.tolist()) if (values == v).sum() >= 20}
    gap = subgroups["largest_gaps"]["age_band"]["subset_accuracy"]
    high, low = max(scored, key=scored.get), min(scored, key=scored.get)
    assert (gap["high"]["group"], gap["low"]["group"]) == (high, low)
    assert gap["gap"] == pytest.approx(scored[high] - scored[low])
    assert gap["high"]["n"] == (values == high).sum()
    assert "unknown" not in {g["high"]["group"] for g in subgroups["largest_gaps"]["gender"].values()}


def test_min_group_size_is_configurable():
    everyone = clinical_metrics(TEST, CLASSES, True, ClinicalSettings(bootstrap=0, min_group_size=1))["subgroups"]
    assert all("not_scored" not in row for rows in everyone["groups"].values() for row in rows.values())
    nobody = clinical_metrics(TEST, CLASSES, True, ClinicalSettings(bootstrap=0, min_group_size=500))["subgroups"]
    assert all("not_scored" in row for rows in nobody["groups"].values() for row in rows.values())
    assert nobody["largest_gaps"] == {"gender": {}, "age_band": {}, "visit_type": {}}


def test_a_group_of_exactly_the_minimum_is_scored():
    values = np.array([p.groups["visit_type"] for p in TEST])
    size = int((values == "first").sum())
    for minimum, scored in ((size, True), (size + 1, False)):
        rows = clinical_metrics(TEST, CLASSES, True, ClinicalSettings(bootstrap=0, min_group_size=minimum))
        assert ("not_scored" not in rows["subgroups"]["groups"]["visit_type"]["first"]) is scored, minimum


def test_group_intervals_contain_the_point_estimates():
    rows = clinical_metrics(TEST, CLASSES, True, ClinicalSettings(bootstrap=100))["subgroups"]["groups"]["gender"]
    for name in ("subset_accuracy", "macro_f1", "macro_auroc"):
        low, high = rows["female"]["ci"][name]
        assert low < rows["female"][name] < high, name


def test_predictions_without_subgroups():
    bare = [type(p)(**{**p.__dict__, "groups": {}}) for p in TEST]
    out = clinical_metrics(bare, CLASSES, True, ClinicalSettings(bootstrap=0))["subgroups"]
    assert out == {"not_available": "the predictions carry no subgroups"}
