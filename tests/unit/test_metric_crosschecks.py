"""dentvlm's scores against independent implementations on fixed inputs: scikit-learn for the
classification metrics, sacrebleu for BLEU, rouge-score for ROUGE-L, the METEOR formula by hand and
nltk, numpy cosine for the embedding similarity."""

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_score, recall_score

from dentvlm.evaluation.bootstrap import bootstrap_interval, macro_f1
from dentvlm.labels import LabelParser
from dentvlm.metrics.classification import ClassificationScores, multi_hot, parse_prediction
from dentvlm.metrics.text import (
    EmbeddingSimilarity,
    Meteor,
    RougeL,
    bleu_metrics,
    resolve_embedding_model,
    resolve_language,
    tokenize,
)
from dentvlm.predictions import Prediction

CLASSES = ["caries", "gingivitis", "pulpitis"]
# parsed answers (None: unparseable; two labels in single-label mode: invalid) and references
PARSED = [["caries"], ["gingivitis"], None, ["caries", "pulpitis"], ["pulpitis"], ["caries"], ["gingivitis"], []]
TRUTH = [["caries"], ["caries"], ["gingivitis"], ["pulpitis"], ["pulpitis"], ["gingivitis"], ["gingivitis"],
         ["caries"]]


def test_single_label_scores_match_sklearn():
    scores = ClassificationScores(CLASSES, multi_label=False)
    scores.update(PARSED, TRUTH)
    result = scores.compute()
    invalid = len(CLASSES)
    pred = [CLASSES.index(p[0]) if p and len(p) == 1 else invalid for p in PARSED]
    true = [CLASSES.index(t[0]) for t in TRUTH]
    labels = list(range(len(CLASSES)))
    assert result["accuracy"] == pytest.approx(accuracy_score(true, pred))
    for name, fn in (("precision", precision_score), ("recall", recall_score), ("f1", f1_score)):
        for average in ("macro", "weighted"):
            expected = fn(true, pred, labels=labels, average=average, zero_division=0)
            assert result[f"{average}_{name}"] == pytest.approx(expected, abs=1e-6), (name, average)
        assert result[f"per_class_{name}"] == pytest.approx(
            list(fn(true, pred, labels=labels, average=None, zero_division=0)), abs=1e-6)
    matrix = confusion_matrix(true, pred, labels=labels + [invalid])
    assert np.array_equal(np.array(result["confusion"]), matrix)
    assert result["unparseable"] == 1 and result["samples"] == len(TRUTH)


def test_multi_label_scores_match_sklearn():
    truth = TRUTH[:]
    truth[3] = ["caries", "pulpitis"]
    scores = ClassificationScores(CLASSES, multi_label=True)
    scores.update(PARSED[:4], truth[:4])  # two updates: state accumulates
    scores.update(PARSED[4:], truth[4:])
    result = scores.compute()
    pred = np.array([multi_hot(p, CLASSES) for p in PARSED])
    true = np.array([multi_hot(t, CLASSES) for t in truth])
    assert result["subset_accuracy"] == pytest.approx(accuracy_score(true, pred))
    assert result["micro_f1"] == pytest.approx(f1_score(true, pred, average="micro", zero_division=0), abs=1e-6)
    assert result["macro_f1"] == pytest.approx(f1_score(true, pred, average="macro", zero_division=0), abs=1e-6)
    assert result["per_class_f1"] == pytest.approx(list(f1_score(true, pred, average=None, zero_division=0)),
                                                   abs=1e-6)


@pytest.mark.parametrize("answer, expected", [
    ("Caries, GINGIVITIS.", ["caries", "gingivitis"]),
    ("gingivitis and tooth decay", ["caries", "gingivitis"]),
    ("No disease.", []),
    ("asdf qwerty", None),
])
def test_answers_parse_robustly(answer, expected):
    prediction = Prediction("k", "classification", "", "", answer)
    assert parse_prediction(prediction, LabelParser(CLASSES)) == expected == prediction.parsed_labels


def test_report_answers_parse_from_the_diagnosis_section():
    report = "examination: caries visible on 36\ndiagnosis: Gingivitis\ntreatment plan: scaling"
    prediction = Prediction("k", "report", "", "", report)
    assert parse_prediction(prediction, LabelParser(CLASSES)) == ["gingivitis"]  # not the examination's caries


PAIRS = [
    ("the patient has deep caries on the lower left molar", "deep caries on the lower left first molar"),
    ("gums are red and bleed when brushing", "the gums are swollen red and bleed on brushing"),
    ("no complaints today", "routine checkup with no complaints"),
    ("scaling and root planing then maintenance every three months",
     "scaling and root planing followed by periodontal maintenance"),
]


def test_bleu_matches_sacrebleu():
    import sacrebleu

    hyps, refs = [h for h, _ in PAIRS], [r for _, r in PAIRS]
    for name, metric in bleu_metrics("en").items():
        n = int(name[-1])
        expected = sacrebleu.metrics.BLEU(max_ngram_order=n, tokenize="13a").corpus_score(hyps, [refs]).score / 100
        assert float(metric(hyps, [[r] for r in refs])) == pytest.approx(expected, abs=1e-4), name


def test_chinese_bleu_is_per_character_like_sacrebleu_zh():
    import sacrebleu

    hyps, refs = ["左下第一磨牙深龋", "牙龈红肿出血"], ["左下第一磨牙龋坏较深", "牙龈红肿刷牙出血"]
    assert resolve_language("auto", refs) == "zh" and resolve_language("auto", ["caries"]) == "en"
    assert tokenize("牙龈red出血", "zh") == ["牙", "龈", "red", "出", "血"]
    expected = sacrebleu.metrics.BLEU(max_ngram_order=2, tokenize="zh").corpus_score(hyps, [refs]).score / 100
    assert float(bleu_metrics("zh")["bleu2"](hyps, [[r] for r in refs])) == pytest.approx(expected, abs=1e-4)
    rouge = RougeL("zh")
    rouge.update(hyps, refs)
    assert float(rouge.compute()) > 0.5  # torchmetrics' default normaliser would have deleted every character


def test_rouge_l_matches_rouge_score():
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"])
    expected = np.mean([scorer.score(r, h)["rougeL"].fmeasure for h, r in PAIRS])
    metric = RougeL("en")
    metric.update([h for h, _ in PAIRS], [r for _, r in PAIRS])
    assert float(metric.compute()) == pytest.approx(expected, abs=1e-6)


def test_meteor_matches_the_formula_and_nltk():
    from nltk.translate.meteor_score import meteor_score

    metric = Meteor("en")  # makes WordNet available
    hypothesis, reference = "caries on the molar", "deep caries on the lower molar"
    metric.update([hypothesis], [reference])
    # exact matches only: caries on the molar (4), in 2 chunks ("caries on the" + "molar")
    m, precision, recall = 4, 4 / 4, 4 / 6
    fmean = 10 * precision * recall / (recall + 9 * precision)
    by_hand = fmean * (1 - 0.5 * (2 / m) ** 3)
    assert float(metric.compute()) == pytest.approx(by_hand, abs=1e-6)
    direct = meteor_score([tokenize(reference)], tokenize(hypothesis))
    assert by_hand == pytest.approx(direct, abs=1e-6)


@pytest.fixture(scope="module")
def minilm():
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(resolve_embedding_model("all-MiniLM-L6-v2"), device="cpu")


def test_embedding_similarity_is_the_mean_cosine(minilm):
    hyps, refs = [h for h, _ in PAIRS], [r for _, r in PAIRS]
    a, b = minilm.encode(hyps), minilm.encode(refs)
    cosine = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    metric = EmbeddingSimilarity()
    metric.update(hyps, refs)
    assert float(metric.compute()) == pytest.approx(cosine.mean(), abs=1e-5)
    twice = EmbeddingSimilarity([resolve_embedding_model("all-MiniLM-L6-v2")] * 2)
    twice.update(hyps, refs)
    assert float(twice.compute()) == pytest.approx(cosine.mean(), abs=1e-5)
    scores = metric.pair_scores(["decay in a back tooth", "the invoice is overdue"], ["caries of a molar"] * 2)
    assert scores[0] > scores[1]


def test_bootstrap_statistics():
    rng = np.random.default_rng(0)
    for seed in range(3):
        pred = np.random.default_rng(seed).integers(0, 2, (40, 4)).astype(bool)
        true = np.random.default_rng(seed + 10).integers(0, 2, (40, 4)).astype(bool)
        assert macro_f1(pred, true) == pytest.approx(f1_score(true, pred, average="macro", zero_division=0))
    values = rng.normal(0.5, 0.1, 400)
    low, high = bootstrap_interval(values, lambda i: float(values[i].mean()), 500, seed=1)
    assert low < values.mean() < high and high - low < 0.05
    assert (low, high) == bootstrap_interval(values, lambda i: float(values[i].mean()), 500, seed=1)
    small = values[:40]
    small_low, small_high = bootstrap_interval(small, lambda i: float(small[i].mean()), 500, seed=1)
    assert small_high - small_low > high - low
    assert bootstrap_interval(values, lambda i: 1.0, 50) == (1.0, 1.0)
