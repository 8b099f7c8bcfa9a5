"""`ClassificationScores` and `parse_prediction` against scikit-learn, on fixed generated answers that
include unparseable ones (None), "no disease" answers ([]) and, for single-label, answers naming two
conditions (the extra "invalid" class, index n)."""

import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    multilabel_confusion_matrix,
    precision_score,
    recall_score,
)

from dentvlm.labels import LabelParser
from dentvlm.metrics.classification import ClassificationScores, multi_hot, parse_prediction
from dentvlm.predictions import Prediction

# "periodontitis" is a reference label that is never predicted (precision 0/0), "malocclusion" is
# predicted but never a reference (recall 0/0): both zero-division paths are exercised.
CLASSES = ["caries", "gingivitis", "pulpitis", "periodontitis", "malocclusion"]
PARSER = LabelParser(CLASSES)

# (generated answer, what it parses to, reference label)
SINGLE = [
    ("Caries.", ["caries"], "caries"),
    ("The answer is gingivitis", ["gingivitis"], "caries"),
    ("I cannot tell from this image", None, "gingivitis"),
    ("caries and pulpitis", ["caries", "pulpitis"], "pulpitis"),  # two labels: invalid
    ("PULPITIS!", ["pulpitis"], "pulpitis"),
    ("tooth decay", ["caries"], "gingivitis"),
    ("gingivitis", ["gingivitis"], "gingivitis"),
    ("No disease.", [], "caries"),  # parses, but is not exactly one label: invalid, not unparseable
    ("Gum inflammation", ["gingivitis"], "gingivitis"),
    ("pulpitis", ["pulpitis"], "periodontitis"),
    ("Malocclusion", ["malocclusion"], "caries"),
    ("caries", ["caries"], "caries"),
    ("xyzzy", None, "pulpitis"),
    ("Pulpitis and gingivitis.", ["gingivitis", "pulpitis"], "gingivitis"),  # two labels: invalid
]

# (generated answer, what it parses to, reference labels); no reference is empty while the answer is
# unparseable (that case has its own test below)
MULTI = [
    ("Caries and gingivitis.", ["caries", "gingivitis"], ["caries", "gingivitis"]),
    ("gingivitis, tooth decay", ["caries", "gingivitis"], ["caries"]),
    ("unclear", None, ["pulpitis"]),
    ("No disease.", [], []),
    ("pulpitis; periodontitis", ["pulpitis", "periodontitis"], ["periodontitis", "pulpitis"]),
    ("Periodontitis", ["periodontitis"], ["gingivitis", "periodontitis"]),
    ("healthy", [], ["caries"]),
    ("malocclusion and caries", ["caries", "malocclusion"], ["caries", "malocclusion"]),
    ("gingivitis", ["gingivitis"], ["gingivitis"]),
    ("caries", ["caries"], ["caries", "pulpitis"]),
    ("???", None, ["malocclusion"]),
]


def parsed(rows, task="classification"):
    return [parse_prediction(Prediction(str(i), task, "", "", answer), PARSER) for i, (answer, *_) in enumerate(rows)]


def single_label_indices():
    invalid = len(CLASSES)
    pred = [CLASSES.index(p[0]) if p and len(p) == 1 else invalid for _, p, _ in SINGLE]
    true = [CLASSES.index(t) for _, _, t in SINGLE]
    return pred, true


def test_fixture_answers_parse_as_listed():
    assert parsed(SINGLE) == [p for _, p, _ in SINGLE]
    assert parsed(MULTI) == [p for _, p, _ in MULTI]


@pytest.fixture(scope="module")
def single_result():
    scores = ClassificationScores(CLASSES, multi_label=False)
    scores.update(parsed(SINGLE), [[t] for _, _, t in SINGLE])
    return scores.compute()


@pytest.fixture(scope="module")
def multi_result():
    scores = ClassificationScores(CLASSES, multi_label=True)
    scores.update(parsed(MULTI), [t for _, _, t in MULTI])
    return scores.compute()


def test_single_label_accuracy_and_counts(single_result):
    pred, true = single_label_indices()
    assert single_result["accuracy"] == pytest.approx(accuracy_score(true, pred), abs=1e-6)
    assert single_result["accuracy"] == pytest.approx(5 / 14, abs=1e-6)
    assert single_result["samples"] == len(SINGLE)
    assert single_result["unparseable"] == 2  # None only: "No disease." and two-label answers parse


@pytest.mark.parametrize("name, fn", [("precision", precision_score), ("recall", recall_score), ("f1", f1_score)])
@pytest.mark.parametrize("average", ["macro", "weighted"])
def test_single_label_averages_match_sklearn(single_result, name, fn, average):
    pred, true = single_label_indices()
    expected = fn(true, pred, labels=list(range(len(CLASSES))), average=average, zero_division=0)
    assert single_result[f"{average}_{name}"] == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("name, fn", [("precision", precision_score), ("recall", recall_score), ("f1", f1_score)])
def test_single_label_per_class_matches_sklearn(single_result, name, fn):
    pred, true = single_label_indices()
    expected = fn(true, pred, labels=list(range(len(CLASSES))), average=None, zero_division=0)
    assert len(single_result[f"per_class_{name}"]) == len(CLASSES)  # the invalid class is not reported
    assert single_result[f"per_class_{name}"] == pytest.approx(list(expected), abs=1e-6)


def test_single_label_zero_division_classes_score_zero(single_result):
    periodontitis, malocclusion = CLASSES.index("periodontitis"), CLASSES.index("malocclusion")
    assert single_result["per_class_precision"][periodontitis] == 0  # never predicted
    assert single_result["per_class_recall"][malocclusion] == 0  # never a reference
    assert single_result["per_class_f1"][periodontitis] == single_result["per_class_f1"][malocclusion] == 0


def test_single_label_confusion_matrix_matches_sklearn(single_result):
    pred, true = single_label_indices()
    n = len(CLASSES)
    expected = confusion_matrix(true, pred, labels=list(range(n + 1)))
    matrix = np.array(single_result["confusion"])
    assert matrix.shape == (n + 1, n + 1)
    assert np.array_equal(matrix, expected)
    assert matrix[n].sum() == 0  # no reference is "invalid"
    assert matrix[:, n].sum() == 5  # two unparseable, one "no disease", two with two labels


def test_multi_label_scores_match_sklearn(multi_result):
    pred = np.array([multi_hot(p, CLASSES) for _, p, _ in MULTI])
    true = np.array([multi_hot(t, CLASSES) for _, _, t in MULTI])
    assert multi_result["subset_accuracy"] == pytest.approx(accuracy_score(true, pred), abs=1e-6)
    assert multi_result["subset_accuracy"] == pytest.approx(5 / 11, abs=1e-6)
    for average in ("micro", "macro"):
        expected = f1_score(true, pred, average=average, zero_division=0)
        assert multi_result[f"{average}_f1"] == pytest.approx(expected, abs=1e-6), average
    per_class = f1_score(true, pred, average=None, zero_division=0)
    assert multi_result["per_class_f1"] == pytest.approx(list(per_class), abs=1e-6)
    assert np.array_equal(np.array(multi_result["confusion"]), multilabel_confusion_matrix(true, pred))
    assert multi_result["unparseable"] == 2 and multi_result["samples"] == len(MULTI)


@pytest.mark.parametrize("multi_label", [False, True])
def test_batched_updates_accumulate_and_reset_clears(multi_label):
    rows = MULTI if multi_label else SINGLE
    preds = parsed(rows)
    truth = [t if multi_label else [t] for _, _, t in rows]
    whole = ClassificationScores(CLASSES, multi_label)
    whole.update(preds, truth)
    expected = whole.compute()
    batched = ClassificationScores(CLASSES, multi_label)
    batched.update(preds[:3], truth[:3])
    batched.update([], [])  # an empty batch changes nothing
    batched.update(preds[3:], truth[3:])
    result = batched.compute()
    assert result.keys() == expected.keys()
    for key, value in expected.items():
        if key == "confusion":
            assert result[key] == value
        else:
            assert result[key] == pytest.approx(value, abs=1e-6), key
    batched.reset()
    batched.update(preds[:1], truth[:1])
    assert batched.compute()["samples"] == 1


def test_single_label_all_unparseable_scores_zero():
    scores = ClassificationScores(CLASSES, multi_label=False)
    scores.update([None, None, ["caries", "gingivitis"]], [["caries"], ["pulpitis"], ["caries"]])
    result = scores.compute()
    assert result["accuracy"] == 0 and result["macro_f1"] == 0 and result["weighted_f1"] == 0
    assert result["unparseable"] == 2 and result["samples"] == 3


def test_multi_label_unparseable_answer_is_wrong_even_without_findings():
    scores = ClassificationScores(CLASSES, multi_label=True)
    scores.update([None], [[]])
    assert scores.compute()["subset_accuracy"] == 0


def test_multi_label_none_answers_count_as_right_when_the_checkup_has_none():
    parser = LabelParser(CLASSES)
    scores = ClassificationScores(CLASSES, multi_label=True)
    answers = ["none", "caries", "none", "gingivitis, caries"]
    truth = [[], [], ["caries"], ["caries", "gingivitis"]]
    scores.update([parser.parse(a) for a in answers], truth)
    result = scores.compute()
    assert result["subset_accuracy"] == 0.5 and result["unparseable"] == 0 and result["samples"] == 4


# ---- parsing of generated answers ----

@pytest.mark.parametrize("answer, expected", [
    ("caries", ["caries"]),
    ("CARIES", ["caries"]),
    ("Caries.", ["caries"]),
    ("caries!!!", ["caries"]),
    ("  The diagnosis is: caries  ", ["caries"]),
    ("Pulpitis, caries", ["caries", "pulpitis"]),  # vocabulary order, not mention order
    ("caries, pulpitis", ["caries", "pulpitis"]),
    ("caries and caries", ["caries"]),
    ("tooth decay", ["caries"]),
    ("Tooth   DECAY.", ["caries"]),
    ("dental caries and inflamed gums", ["caries", "gingivitis"]),
    ("Gum disease", ["periodontitis"]),
    ("No disease.", []),
    ("no disease", []),
    ("None", []),
    ("Healthy!", []),
    ("No disease, but caries on 36.", ["caries"]),
    ("asdf qwerty", None),
    ("cariesx and pulpitisy", None),  # whole words only
    ("", None),
    ("   \n", None),
])
def test_answers_parse_robustly(answer, expected):
    prediction = Prediction("k", "classification", "", "", answer)
    assert parse_prediction(prediction, PARSER) == expected
    assert prediction.parsed_labels == expected  # parse_prediction records its result


def test_longest_phrase_wins_and_out_of_vocabulary_names_are_dropped():
    # "periapical periodontitis" is a known condition outside CLASSES: it must not count as periodontitis
    assert parse_prediction(Prediction("k", "classification", "", "", "periapical periodontitis"), PARSER) == []
    assert parse_prediction(Prediction("k", "classification", "", "", "periodontitis"), PARSER) == ["periodontitis"]


REPORT = "examination: caries visible on 36\ndiagnosis: Gingivitis\ntreatment plan: scaling and caries filling"


@pytest.mark.parametrize("report, expected", [
    (REPORT, ["gingivitis"]),  # not the caries of the examination or treatment plan
    ("Diagnosis: tooth decay; pulpitis\nTreatment plan: root canal", ["caries", "pulpitis"]),
    ("chief complaint: pain\ndiagnosis: caries of 36\npulpitis of 46\ntreatment plan: filling", ["caries", "pulpitis"]),
    ("diagnosis: No disease.", []),
    ("diagnosis: nothing I can name\ntreatment plan: caries filling", None),
    ("examination: caries on 36\ntreatment plan: filling", None),  # no diagnosis section
    ("caries and pulpitis", None),  # free text without sections
])
def test_report_answers_parse_from_the_diagnosis_section(report, expected):
    prediction = Prediction("k", "report", "", "", report)
    assert parse_prediction(prediction, PARSER) == expected
    assert prediction.parsed_labels == expected


def test_classification_answers_parse_the_whole_text():
    assert parse_prediction(Prediction("k", "classification", "", "", REPORT), PARSER) == ["caries", "gingivitis"]
