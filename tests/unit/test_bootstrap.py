"""Bootstrap intervals: the numpy statistics against scikit-learn and `ClassificationScores`, and the
percentile interval's basic properties."""

import math

import numpy as np
import pytest
from sklearn.metrics import f1_score

from dentvlm.evaluation.bootstrap import bootstrap_interval, classification_intervals, macro_f1, report_intervals
from dentvlm.metrics.classification import ClassificationScores
from dentvlm.predictions import Prediction

CLASSES = ["caries", "gingivitis", "pulpitis", "periodontitis"]


@pytest.mark.parametrize("seed", range(9))
def test_macro_f1_matches_sklearn(seed):
    rng = np.random.default_rng(seed)
    # at least 2 columns: sklearn reads a single column as a binary target and averages over {0, 1}
    samples, classes = int(rng.integers(1, 60)), int(rng.integers(2, 7))
    density = [0.05, 0.3, 0.7][seed % 3]  # sparse: columns without any positive (F1 undefined -> 0)
    pred = rng.random((samples, classes)) < density
    true = rng.random((samples, classes)) < density
    expected = f1_score(true, pred, average="macro", zero_division=0)
    assert macro_f1(pred, true) == pytest.approx(expected, abs=1e-12)


def test_macro_f1_edge_cases():
    empty = np.zeros((5, 3), dtype=bool)
    assert macro_f1(empty, empty) == 0  # sklearn with zero_division=0 agrees
    assert f1_score(empty, empty, average="macro", zero_division=0) == 0
    eye = np.eye(3, dtype=bool)
    assert macro_f1(eye, eye) == 1
    assert macro_f1(eye, ~eye) == 0


def test_bootstrap_of_a_constant_statistic_has_zero_width():
    assert bootstrap_interval(list(range(30)), lambda i: 0.75, resamples=50) == (0.75, 0.75)


def test_bootstrap_passes_resampled_index_arrays():
    seen = []

    def statistic(indices):
        seen.append(indices)
        return 0.0

    bootstrap_interval(["a"] * 17, statistic, resamples=20, seed=3)
    assert len(seen) == 20
    assert all(i.shape == (17,) and i.min() >= 0 and i.max() < 17 for i in seen)
    assert any(len(set(i.tolist())) < 17 for i in seen)  # with replacement


def mean(values):
    return lambda indices: float(values[indices].mean())


def test_bootstrap_interval_of_a_mean():
    values = np.random.default_rng(0).normal(0.5, 0.1, 400)
    low, high = bootstrap_interval(values, mean(values), resamples=1000, seed=1)
    assert low < values.mean() < high
    # the percentile interval of a mean is close to the normal one, 2 * 1.96 * sd / sqrt(n)
    assert high - low == pytest.approx(2 * 1.96 * values.std() / math.sqrt(len(values)), rel=0.15)
    assert (low, high) == bootstrap_interval(values, mean(values), resamples=1000, seed=1)  # reproducible
    assert (low, high) != bootstrap_interval(values, mean(values), resamples=1000, seed=2)
    small = values[:40]
    small_low, small_high = bootstrap_interval(small, mean(small), resamples=1000, seed=1)
    assert small_low < small.mean() < small_high
    assert small_high - small_low > 2 * (high - low)  # ~ sqrt(10) times wider
    half_low, half_high = bootstrap_interval(values, mean(values), resamples=1000, seed=1, level=0.5)
    assert low < half_low < half_high < high


def test_bootstrap_of_nothing_is_nan():
    for interval in (bootstrap_interval([], lambda i: 1.0), bootstrap_interval([1, 2], lambda i: 1.0, resamples=0)):
        assert all(math.isnan(bound) for bound in interval)


def predictions(parsed, truth):
    return [Prediction(str(i), "classification", "", "", "", t, p) for i, (p, t) in enumerate(zip(parsed, truth))]


def scores(parsed, truth, multi_label) -> dict:
    metric = ClassificationScores(CLASSES, multi_label)
    metric.update(parsed, truth)
    return metric.compute()


@pytest.mark.parametrize("multi_label", [False, True])
def test_single_sample_intervals_are_the_classification_scores(multi_label):
    # with one sample every resample is that sample, so the interval collapses onto the statistic itself
    cases = [
        (["caries"], ["caries"]),
        (["caries", "gingivitis"], ["caries"]),  # single-label: invalid, wrong everywhere
        (None, ["pulpitis"]),
        ([], ["pulpitis"]),
        (["gingivitis"], ["caries"]),
    ]
    if multi_label:
        cases += [(["caries", "pulpitis"], ["caries", "pulpitis"]), (["caries"], ["caries", "pulpitis"])]
    name = "subset_accuracy" if multi_label else "accuracy"
    for parsed, truth in cases:
        intervals = classification_intervals(predictions([parsed], [truth]), CLASSES, multi_label, 20, 0)
        expected = scores([parsed], [truth], multi_label)
        assert intervals[name] == pytest.approx((expected[name],) * 2, abs=1e-6), (parsed, truth)
        assert intervals["macro_f1"] == pytest.approx((expected["macro_f1"],) * 2, abs=1e-6), (parsed, truth)


def random_predictions(rng, n, multi_label):
    options = [None, [], ["caries", "gingivitis"]] + [[c] for c in CLASSES] * 3
    parsed, truth = [], []
    for _ in range(n):
        if multi_label:
            t = [c for c in CLASSES if rng.random() < 0.35]
            p = t if rng.random() < 0.6 else options[rng.integers(len(options))]
        else:
            t = [CLASSES[rng.integers(len(CLASSES))]]
            p = t if rng.random() < 0.5 else options[rng.integers(len(options))]
        parsed.append(p)
        truth.append(t)
    return parsed, truth


@pytest.mark.parametrize("multi_label", [False, True])
def test_intervals_contain_the_point_estimates(multi_label):
    parsed, truth = random_predictions(np.random.default_rng(7), 80, multi_label)
    intervals = classification_intervals(predictions(parsed, truth), CLASSES, multi_label, resamples=300, seed=0)
    name = "subset_accuracy" if multi_label else "accuracy"
    assert set(intervals) == {name, "macro_f1"}
    point = scores(parsed, truth, multi_label)
    for key in intervals:
        low, high = intervals[key]
        assert 0 <= low < point[key] < high <= 1, key
        assert high - low < 0.4, key
    assert intervals == classification_intervals(predictions(parsed, truth), CLASSES, multi_label, 300, 0)


def test_single_label_two_label_answers_are_wrong_everywhere():
    preds = predictions([["caries", "gingivitis"]] * 10, [["caries"]] * 10)
    assert classification_intervals(preds, CLASSES, False, 50, 0) == {"accuracy": (0.0, 0.0), "macro_f1": (0.0, 0.0)}
    # multi-label: caries is found (F1 1), gingivitis a false positive (0), the others undefined (0)
    multi = classification_intervals(preds, CLASSES, True, 50, 0)
    assert multi == {"subset_accuracy": (0.0, 0.0), "macro_f1": (0.25, 0.25)}


def test_all_correct_gives_one():
    truth = [["caries"], ["gingivitis"], ["pulpitis"], ["periodontitis"]] * 3
    intervals = classification_intervals(predictions(truth, truth), CLASSES, False, 50, 0)
    assert intervals["accuracy"] == (1.0, 1.0)
    assert intervals["macro_f1"][1] == 1.0  # resamples missing a class score it 0 (undefined)


def test_empty_predictions_give_nan():
    intervals = classification_intervals([], CLASSES, True, 50, 0)
    assert all(math.isnan(bound) for interval in intervals.values() for bound in interval)


def test_report_intervals():
    from dentvlm.metrics.report import ReportScores

    report = ReportScores(CLASSES, ["all-MiniLM-L6-v2"])
    generated = ["deep caries on 36", "red gums that bleed", "pulpitis of 46", "healthy teeth", "caries on 26"]
    references = ["deep caries on 36 with pulp exposure", "gums bleed on brushing", "acute pulpitis of 46",
                  "periodontitis with bone loss", "caries and pulpitis of 26"]
    parsed = [["caries"], None, ["pulpitis"], [], ["caries"]]
    truth = [["caries"], ["gingivitis"], ["pulpitis"], ["periodontitis"], ["caries", "pulpitis"]]
    preds = [Prediction(str(i), "report", "", r, g, t, p)
             for i, (g, r, p, t) in enumerate(zip(generated, references, parsed, truth))]
    intervals = report_intervals(preds, report, CLASSES, resamples=200, seed=0)
    assert set(intervals) == {"meteor", "embedding_similarity", "finding_macro_f1"}
    report.update(generated, references, parsed, truth)
    point = report.compute()
    for key, (low, high) in intervals.items():
        assert low <= high, key
        assert low <= point[key] <= high, key
    assert intervals["meteor"][0] < intervals["meteor"][1]
    assert report_intervals([], report, CLASSES, resamples=200, seed=0) == {}


def test_unparseable_answer_is_never_right_in_the_intervals():
    prediction = Prediction("k", "classification", "", "", "gibberish", true_labels=[], parsed_labels=None)
    intervals = classification_intervals([prediction], ["caries", "gingivitis"], True, resamples=20, seed=0)
    assert intervals["subset_accuracy"] == (0.0, 0.0)
