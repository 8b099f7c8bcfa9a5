"""Clinical metrics of a stand-in with known probabilities and labels, against scikit-learn (and a numpy
reference for the calibration error, which scikit-learn lacks), and the paths where a metric is not defined
or not available."""

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, confusion_matrix, roc_auc_score, roc_curve

from dentvlm.evaluation.bootstrap import answer_arrays
from dentvlm.evaluation.clinical import ClinicalSettings, clinical_metrics
from dentvlm.evaluation.operating_points import rates
from tests.unit.clinical_standin import CLASSES, arrays, standin

TEST, VAL = standin(200, seed=0), standin(150, seed=1, split="val")


@pytest.fixture(scope="module")
def clinical():
    return clinical_metrics(TEST + VAL, CLASSES, True, ClinicalSettings(bootstrap=0))


def sklearn_rates(truth: np.ndarray, decision: np.ndarray) -> dict:
    tn, fp, fn, tp = confusion_matrix(truth, decision, labels=[False, True]).ravel()
    return {"sensitivity": tp / (tp + fn), "specificity": tn / (tn + fp), "ppv": tp / (tp + fp), "npv": tn / (tn + fn)}


def test_auroc_and_average_precision_match_sklearn(clinical):
    probs, truth = arrays(TEST)
    discrimination = clinical["discrimination"]
    for k, c in enumerate(CLASSES):
        row = discrimination["per_class"][c]
        assert row["auroc"] == pytest.approx(roc_auc_score(truth[:, k], probs[:, k]), abs=1e-6), c
        assert row["average_precision"] == pytest.approx(average_precision_score(truth[:, k], probs[:, k]), abs=1e-6)
        assert row["positives"] == truth[:, k].sum() and row["positives"] + row["negatives"] == 200
        assert row["auroc"] > 0.65  # the stand-in discriminates: a metric that returned 0.5 would fail
    assert discrimination["macro"]["auroc"] == pytest.approx(roc_auc_score(truth, probs, average="macro"), abs=1e-6)
    assert discrimination["macro"]["average_precision"] == pytest.approx(
        average_precision_score(truth, probs, average="macro"), abs=1e-6)
    assert discrimination["auroc_not_defined"] == [] and discrimination["macro"]["ci"]["auroc"] is None


def test_bootstrap_intervals_resample_checkups():
    """The intervals are the percentiles of scikit-learn's AUROC over the same resampled checkups."""
    out = clinical_metrics(TEST, CLASSES, True, ClinicalSettings(bootstrap=60, seed=4))["discrimination"]
    probs, truth = arrays(TEST)
    rng = np.random.default_rng(4)
    resampled = [rng.integers(0, 200, 200) for _ in range(60)]
    caries = [roc_auc_score(truth[i, 0], probs[i, 0]) for i in resampled]
    macro = [roc_auc_score(truth[i], probs[i], average="macro") for i in resampled]
    assert out["per_class"]["caries"]["ci"]["auroc"] == pytest.approx(np.quantile(caries, [0.025, 0.975]), abs=1e-6)
    assert out["macro"]["ci"]["auroc"] == pytest.approx(np.quantile(macro, [0.025, 0.975]), abs=1e-6)
    low, high = out["macro"]["ci"]["average_precision"]
    assert low < out["macro"]["average_precision"] < high


def test_operating_point_of_the_answers_matches_sklearn(clinical):
    answers, truth, _ = answer_arrays(TEST, CLASSES, True)
    point = clinical["operating_points"]["generated_answers"]
    for k, c in enumerate(CLASSES):
        expected = sklearn_rates(truth[:, k], answers[:, k])
        assert {r: point["per_class"][c][r] for r in expected} == pytest.approx(expected), c
        assert point["per_class"][c]["threshold"] is None
    macro = np.mean([[sklearn_rates(truth[:, k], answers[:, k])[r] for r in ("ppv", "npv")] for k in range(5)], 0)
    assert [point["macro"]["ppv"], point["macro"]["npv"]] == pytest.approx(macro)


def test_rates_at_a_given_threshold_match_sklearn():
    probs, truth = arrays(TEST)
    out = rates(probs >= 0.6, truth, CLASSES, [0.6] * 5)
    for k, c in enumerate(CLASSES):
        expected = sklearn_rates(truth[:, k], probs[:, k] >= 0.6)
        assert {r: out["per_class"][c][r] for r in expected} == pytest.approx(expected), c
    # calculus is squeezed into [0.55, 0.85]: nothing is called negative at 0.5, so NPV is not defined
    squeezed = rates(probs >= 0.5, truth, CLASSES, [0.5] * 5)["per_class"]["calculus"]
    assert squeezed["npv"] is None and squeezed["specificity"] == 0 and squeezed["sensitivity"] == 1


def reference_thresholds(probs: np.ndarray, truth: np.ndarray, target: float) -> tuple[float, float]:
    """Youden's and the target-sensitivity threshold from scikit-learn's full ROC curve."""
    fpr, tpr, thresholds = roc_curve(truth, probs, drop_intermediate=False)
    youden = thresholds[1:][np.argmax((tpr - fpr)[1:])]  # thresholds[0] is inf: no threshold of the data
    return youden, thresholds[np.argmax(tpr >= target)]  # tpr rises as the threshold falls: the highest


@pytest.mark.parametrize("target", [0.9, 0.75])
def test_thresholds_are_chosen_on_val_and_applied_to_test(target):
    out = clinical_metrics(TEST + VAL, CLASSES, True, ClinicalSettings(target_sensitivity=target, bootstrap=0))
    val_probs, val_truth = arrays(VAL)
    probs, truth = arrays(TEST)
    points = out["operating_points"]
    assert points["target_sensitivity"]["target"] == target
    for k, c in enumerate(CLASSES):
        youden, sensitive = reference_thresholds(val_probs[:, k], val_truth[:, k], target)
        for name, expected in (("youden", youden), ("target_sensitivity", sensitive)):
            row = points[name]["per_class"][c]
            assert row["threshold"] == pytest.approx(expected, abs=1e-12), (name, c)
            reference = sklearn_rates(truth[:, k], probs[:, k] >= expected)  # on the test split, unchanged
            assert {r: row[r] for r in reference} == pytest.approx(reference), (name, c)
        val_sensitivity = (val_probs[val_truth[:, k], k] >= sensitive).mean()
        assert val_sensitivity >= target
        higher = val_probs[:, k][val_probs[:, k] > sensitive]
        if len(higher):  # the next higher threshold misses the target
            assert (val_probs[val_truth[:, k], k] >= higher.min()).mean() < target


def test_a_probability_at_the_threshold_is_a_positive():
    """Thresholds chosen on the test checkups themselves land on test probabilities: the rates are the ROC
    point's, which counts a probability equal to the threshold as positive."""
    as_val = without(TEST, "split", "val")
    youden = clinical_metrics(TEST + as_val, CLASSES, True, ClinicalSettings(bootstrap=0))["operating_points"]["youden"]
    probs, truth = arrays(TEST)
    for k, c in enumerate(CLASSES):
        fpr, tpr, thresholds = roc_curve(truth[:, k], probs[:, k], drop_intermediate=False)
        at = int(np.flatnonzero(thresholds == youden["per_class"][c]["threshold"])[0])
        row = youden["per_class"][c]
        assert (row["sensitivity"], row["specificity"]) == pytest.approx((tpr[at], 1 - fpr[at])), c


def ece_reference(probs: np.ndarray, truth: np.ndarray, bins: int) -> float:
    """Expected calibration error: over equal-width bins of probability, |observed frequency - mean
    probability| weighted by the bin's share of the samples."""
    index = np.clip(np.searchsorted(np.linspace(0, 1, bins + 1), probs, side="right") - 1, 0, bins - 1)
    return sum((index == b).mean() * abs(truth[index == b].mean() - probs[index == b].mean())
               for b in range(bins) if (index == b).any())


@pytest.mark.parametrize("bins", [10, 4])
def test_calibration_error_matches_the_equal_width_definition(bins):
    settings = ClinicalSettings(calibration_bins=bins, bootstrap=0)
    calibration = clinical_metrics(TEST, CLASSES, True, settings)["calibration"]
    probs, truth = arrays(TEST)
    for k, c in enumerate(CLASSES):
        assert calibration["per_class"][c] == pytest.approx(ece_reference(probs[:, k], truth[:, k], bins), abs=1e-6)
    assert calibration["pooled"] == pytest.approx(ece_reference(probs.ravel(), truth.ravel(), bins), abs=1e-6)
    assert calibration["bins"] == bins and calibration["binning"] == "equal-width"
    assert calibration["per_class"]["calculus"] > 0.2 > calibration["per_class"]["gingivitis"]
    reliability = calibration["reliability"]
    assert sum(reliability["count"]) == probs.size and len(reliability["count"]) == bins
    top = probs.ravel() >= 1 - 1 / bins
    assert reliability["count"][-1] == top.sum()
    assert reliability["frequency"][-1] == pytest.approx(truth.ravel()[top].mean())
    assert reliability["confidence"][-1] == pytest.approx(probs.ravel()[top].mean())


def test_single_label_scores_one_vs_rest():
    test, val = standin(200, seed=2, multi_label=False), standin(150, seed=3, split="val", multi_label=False)
    out = clinical_metrics(test + val, CLASSES, False, ClinicalSettings(bootstrap=0))
    probs, truth = arrays(test)
    assert truth.sum(1).tolist() == [1] * 200
    for k, c in enumerate(CLASSES):
        assert out["discrimination"]["per_class"][c]["auroc"] == pytest.approx(roc_auc_score(truth[:, k], probs[:, k]),
                                                                              abs=1e-6)
    assert "accuracy" in out["subgroups"]["groups"]["gender"]["female"]


def without(predictions, field: str, value):
    return [type(p)(**{**p.__dict__, field: value}) for p in predictions]


def test_without_probabilities_every_probability_metric_is_not_available():
    unscored = without(TEST, "class_probabilities", None)
    out = clinical_metrics(unscored + VAL, CLASSES, True, ClinicalSettings(bootstrap=0))
    for key in ("discrimination", "calibration"):
        assert "no class probabilities" in out[key]["not_available"]
    for key in ("youden", "target_sensitivity"):
        assert out["operating_points"][key]["not_available"].startswith("test split: no class probabilities")
    assert out["operating_points"]["generated_answers"]["macro"]["sensitivity"] > 0.5  # answers still score
    female = out["subgroups"]["groups"]["gender"]["female"]
    assert female["macro_auroc"] is None and female["subset_accuracy"] > 0
    assert "no class probabilities" in out["subgroups"]["macro_auroc_not_available"]


def test_some_checkups_without_probabilities_make_them_not_available():
    partial = TEST[:-1] + without(TEST[-1:], "class_probabilities", {"caries": 0.5})
    out = clinical_metrics(partial, CLASSES, True, ClinicalSettings(bootstrap=0))
    assert out["discrimination"]["not_available"] == "1 of 200 checkups have no class probability for every class"


def test_without_val_predictions_thresholds_are_not_available(clinical):
    out = clinical_metrics(TEST, CLASSES, True, ClinicalSettings(bootstrap=0))
    assert out["val_samples"] == 0
    for key in ("youden", "target_sensitivity"):
        assert "no validation-split predictions" in out["operating_points"][key]["not_available"]
    assert out["discrimination"] == clinical["discrimination"]  # val checkups never enter a test metric
    unscored_val = clinical_metrics(TEST + without(VAL, "class_probabilities", None), CLASSES, True,
                                    ClinicalSettings(bootstrap=0))
    assert unscored_val["operating_points"]["youden"]["not_available"].startswith("validation split: no class")


def one_valued(predictions, condition: str, present: bool):
    changed = []
    for p in predictions:
        labels = [c for c in p.true_labels if c != condition] + ([condition] if present else [])
        changed.append(type(p)(**{**p.__dict__, "true_labels": labels}))
    return changed


def test_a_class_with_one_truth_value_is_not_defined_never_a_made_up_number():
    test = one_valued(one_valued(TEST, "pulpitis", False), "calculus", True)
    out = clinical_metrics(test, CLASSES, True, ClinicalSettings(bootstrap=40))["discrimination"]
    probs, truth = arrays(test)
    assert out["auroc_not_defined"] == ["pulpitis", "calculus"] and out["average_precision_not_defined"] == ["pulpitis"]
    assert out["per_class"]["pulpitis"]["auroc"] is None and out["per_class"]["pulpitis"]["ci"]["auroc"] is None
    assert out["per_class"]["calculus"]["average_precision"] == 1.0  # all positive: every precision is 1
    defined = [0, 1, 3]
    assert out["macro"]["auroc"] == pytest.approx(np.mean([roc_auc_score(truth[:, k], probs[:, k]) for k in defined]))
    assert out["macro"]["auroc_classes"] == 3 and out["macro"]["ci"]["auroc"] is not None


def test_a_resample_without_positives_leaves_that_class_out_of_its_interval():
    """A rare class (3 positives): about 1 resample in 20 holds none of them; scoring those as AUROC 0 (what
    torchmetrics returns) would drag the lower bound down, so they are skipped, as scikit-learn must be."""
    test = one_valued(TEST, "pulpitis", False)
    test[:3] = one_valued(test[:3], "pulpitis", True)
    out = clinical_metrics(test, CLASSES, True, ClinicalSettings(bootstrap=200, seed=1))["discrimination"]
    probs, truth = arrays(test)
    rng = np.random.default_rng(1)
    resampled = [rng.integers(0, 200, 200) for _ in range(200)]
    aurocs = [roc_auc_score(truth[i, 2], probs[i, 2]) for i in resampled if truth[i, 2].any()]
    assert len(aurocs) < 200
    assert out["per_class"]["pulpitis"]["ci"]["auroc"] == pytest.approx(np.quantile(aurocs, [0.025, 0.975]), abs=1e-6)


def test_a_class_with_one_truth_value_in_val_has_no_threshold():
    out = clinical_metrics(TEST + one_valued(VAL, "caries", False), CLASSES, True, ClinicalSettings(bootstrap=0))
    youden = out["operating_points"]["youden"]
    assert youden["per_class"]["caries"]["threshold"] is None and youden["per_class"]["caries"]["sensitivity"] is None
    assert "only one truth value" in youden["per_class"]["caries"]["not_available"]
    others = [youden["per_class"][c]["ppv"] for c in CLASSES[1:]]
    assert youden["macro"]["ppv"] == pytest.approx(np.mean(others))


def test_no_test_predictions():
    out = clinical_metrics(VAL, CLASSES, True, ClinicalSettings(bootstrap=0))
    assert out["not_available"] == "no test-split classification predictions" and out["val_samples"] == 150


def test_settings_are_checked():
    with pytest.raises(ValueError, match="target_sensitivity"):
        ClinicalSettings(target_sensitivity=0)
    with pytest.raises(ValueError, match="min_group_size"):
        ClinicalSettings(min_group_size=0)


def test_agreement_of_thresholded_probabilities_with_the_generated_answers():
    """The share of parseable answers whose label set the probabilities (>= 0.5) reproduce, per class and
    whole; Cohen's kappa per class matches scikit-learn's."""
    from sklearn.metrics import cohen_kappa_score

    from dentvlm.evaluation.clinical import agreement
    from dentvlm.evaluation.clinical_data import scored
    from dentvlm.predictions import Prediction

    classes = ("caries", "gingivitis")
    rows = [(["caries"], {"caries": 0.9, "gingivitis": 0.2}), ([], {"caries": 0.1, "gingivitis": 0.6}),
            (["caries", "gingivitis"], {"caries": 0.7, "gingivitis": 0.8}), (None, {"caries": 0.9, "gingivitis": 0.9}),
            (["gingivitis"], {"caries": 0.4, "gingivitis": 0.3})]
    predictions = [Prediction(key=str(n), task="classification", prompt="", reference="", generated="x",
                              true_labels=["caries"], parsed_labels=parsed, class_probabilities=probabilities)
                   for n, (parsed, probabilities) in enumerate(rows)]
    found = agreement(scored(predictions, classes, True), classes)
    assert found["checkups"] == 4  # the unparseable answer is left out
    assert found["label_set"] == 0.5  # rows 0 and 2
    assert found["per_class"] == {"caries": 1.0, "gingivitis": 0.5}
    decided, answered = [0, 1, 1, 0], [0, 0, 1, 1]
    assert found["cohen_kappa"]["gingivitis"] == pytest.approx(cohen_kappa_score(answered, decided))
