"""Report-generation metrics against independent implementations on fixed strings: sacrebleu (and
nltk) for BLEU, rouge-score for ROUGE-L, the METEOR formula by hand and nltk's METEOR, numpy cosine
on sentence-transformer embeddings; Chinese tokenization; and `ReportScores` (clinical finding F1
against scikit-learn)."""

import numpy as np
import pytest
import sacrebleu
from sklearn.metrics import f1_score

from dentvlm.labels import LabelParser
from dentvlm.metrics.classification import multi_hot, parse_prediction
from dentvlm.metrics.report import ReportScores
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

# (hypothesis, reference): punctuation, digits, different lengths, one hypothesis shorter than 4 tokens
PAIRS = [
    ("The patient has deep caries on the lower left first molar, tooth 36.",
     "Deep caries on the lower left first molar (tooth 36); pulp not exposed."),
    ("Gums are red and bleed when brushing.", "The gums are red, swollen and bleed when brushing."),
    ("No complaints.", "Routine checkup with no complaints."),
    ("Scaling and root planing, then periodontal maintenance every three months.",
     "Scaling and root planing followed by periodontal maintenance every three months."),
]
HYPS, REFS = [h for h, _ in PAIRS], [r for _, r in PAIRS]

# lower-case ASCII words only, so rouge-score's tokenizer ([a-z0-9]+) and ours see the same tokens
PLAIN_PAIRS = [
    ("the patient has deep caries on the lower left first molar tooth 36",
     "deep caries on the lower left first molar tooth 36 and the pulp is not exposed"),
    ("gums are red and bleed when brushing", "the gums are red swollen and bleed when brushing"),
    ("no complaints", "routine checkup with no complaints"),
    ("root planing", "scaling and root planing followed by periodontal maintenance every three months"),
    ("crown fracture of 21", "caries"),  # no overlap at all
]

ZH_PAIRS = [
    ("左下第一磨牙深龋，牙髓未暴露。", "左下第一磨牙龋坏较深，牙髓未暴露。"),
    ("牙龈红肿，刷牙时出血。", "牙龈红肿，刷牙出血明显。"),
    ("建议全口洁治。", "建议全口洁治并定期复查。"),
    ("36牙冠折裂", "36牙冠部分折裂，建议cr修复"),
]
ZH_HYPS, ZH_REFS = [h for h, _ in ZH_PAIRS], [r for _, r in ZH_PAIRS]


def bleu(metric, hyps, refs) -> float:
    metric.reset()
    metric.update(list(hyps), [[r] for r in refs])
    return float(metric.compute())


# ---- BLEU ----

@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_bleu_matches_sacrebleu(n):
    metric = bleu_metrics("en")[f"bleu{n}"]
    expected = sacrebleu.metrics.BLEU(max_ngram_order=n, tokenize="13a").corpus_score(HYPS, [REFS]).score / 100
    assert 0.3 < expected < 1  # non-trivial, with a brevity penalty
    assert bleu(metric, HYPS, REFS) == pytest.approx(expected, abs=1e-5)
    # a different corpus (a subset, a different brevity penalty) still agrees
    sub = sacrebleu.metrics.BLEU(max_ngram_order=n, tokenize="13a").corpus_score(HYPS[1:], [REFS[1:]]).score / 100
    assert bleu(metric, HYPS[1:], REFS[1:]) == pytest.approx(sub, abs=1e-5)


def test_bleu_is_a_corpus_score_accumulated_over_batches():
    metric = bleu_metrics("en")["bleu4"]
    metric.update(HYPS[:2], [[r] for r in REFS[:2]])
    metric.update(HYPS[2:], [[r] for r in REFS[2:]])
    expected = sacrebleu.metrics.BLEU(max_ngram_order=4, tokenize="13a").corpus_score(HYPS, [REFS]).score / 100
    assert float(metric.compute()) == pytest.approx(expected, abs=1e-5)
    sentence_mean = np.mean([bleu(bleu_metrics("en")["bleu4"], [h], [r]) for h, r in PAIRS])
    assert abs(expected - sentence_mean) > 1e-3  # corpus BLEU is not the mean of sentence BLEU


def test_bleu_without_matching_four_grams_is_zero_like_unsmoothed_sacrebleu():
    # torchmetrics' SacreBLEUScore does not smooth; sacrebleu's default ("exp") would give > 0 here
    hyps, refs = ["caries on the left molar"], ["left molar caries on the distal surface"]
    expected = sacrebleu.metrics.BLEU(max_ngram_order=4, tokenize="13a", smooth_method="none")
    assert bleu(bleu_metrics("en")["bleu4"], hyps, refs) == expected.corpus_score(hyps, [refs]).score / 100 == 0
    assert bleu(bleu_metrics("en")["bleu2"], hyps, refs) > 0


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_bleu_matches_nltk_on_13a_tokens(n):
    from nltk.translate.bleu_score import corpus_bleu
    from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

    # nltk divides each sentence's n-gram count by max(1, count): a hypothesis shorter than n tokens
    # ("No complaints." has 3) adds 1 to nltk's BLEU-4 denominator but 0 to sacrebleu's, so the two
    # disagree there (0.433 vs 0.437 on PAIRS). Compare on the pairs whose hypotheses have >= 4 tokens.
    pairs = [(h, r) for h, r in PAIRS if len(Tokenizer13a()(h).split()) >= 4]
    assert len(pairs) == 3
    tok = Tokenizer13a()
    expected = corpus_bleu([[tok(r).split()] for _, r in pairs], [tok(h).split() for h, _ in pairs],
                           weights=(1 / n,) * n)
    assert bleu(bleu_metrics("en")[f"bleu{n}"], [h for h, _ in pairs], [r for _, r in pairs]) == pytest.approx(
        expected, abs=1e-5)


# ---- ROUGE-L ----

def test_rouge_l_matches_rouge_score():
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"])
    per_pair = [scorer.score(r, h)["rougeL"].fmeasure for h, r in PLAIN_PAIRS]
    assert per_pair[-1] == 0 and all(0 < s < 1 for s in per_pair[:-1])
    metric = RougeL("en")
    metric.update([h for h, _ in PLAIN_PAIRS], [r for _, r in PLAIN_PAIRS])
    assert float(metric.compute()) == pytest.approx(np.mean(per_pair), abs=1e-6)


def test_rouge_l_single_pair_by_hand():
    # LCS of "gums are red and bleed when brushing" and "the gums are red swollen and bleed when brushing": 7
    metric = RougeL("en")
    metric.update(["gums are red and bleed when brushing"], ["the gums are red swollen and bleed when brushing"])
    precision, recall = 7 / 7, 7 / 9
    assert float(metric.compute()) == pytest.approx(2 * precision * recall / (precision + recall), abs=1e-6)


# ---- METEOR ----

@pytest.fixture(scope="module")
def meteor_en():
    return Meteor("en")  # makes WordNet loadable (copied from Debian's packages when nltk has none)


def meteor_by_hand(matches: int, hyp_len: int, ref_len: int, chunks: int) -> float:
    precision, recall = matches / hyp_len, matches / ref_len
    fmean = 10 * precision * recall / (recall + 9 * precision)
    return fmean * (1 - 0.5 * (chunks / matches) ** 3)


def test_meteor_matches_the_formula_on_exact_matches(meteor_en):
    from nltk.translate.meteor_score import meteor_score

    # exact matches only; unmatched words (deep, lower, has) have no stem or WordNet match
    cases = [
        ("caries on the molar", "deep caries on the lower molar", meteor_by_hand(4, 4, 6, 2)),
        ("the lower molar has deep caries", "deep caries on the lower molar", meteor_by_hand(5, 6, 6, 2)),
    ]
    for hyp, ref, expected in cases:
        assert meteor_en.score(hyp, ref) == pytest.approx(expected, abs=1e-9)
        assert meteor_score([tokenize(ref)], tokenize(hyp)) == pytest.approx(expected, abs=1e-9)
    meteor_en.reset()
    meteor_en.update([h for h, _, _ in cases], [r for _, r, _ in cases])
    assert float(meteor_en.compute()) == pytest.approx(np.mean([e for _, _, e in cases]), abs=1e-9)


def test_meteor_matches_nltk_with_our_tokens(meteor_en):
    from nltk.translate.meteor_score import meteor_score

    expected = np.mean([meteor_score([tokenize(r)], tokenize(h)) for h, r in PAIRS])
    assert 0.3 < expected < 1
    meteor_en.reset()
    meteor_en.update(HYPS, REFS)
    assert float(meteor_en.compute()) == pytest.approx(expected, abs=1e-9)


def test_meteor_uses_wordnet_synonyms(meteor_en):
    # "gum" and "gingiva" share a WordNet synset; "xyz" matches nothing
    synonym = meteor_en.score("the gum bleeds", "the gingiva bleeds")
    assert synonym == pytest.approx(meteor_by_hand(3, 3, 3, 1), abs=1e-9)
    assert meteor_en.score("the xyz bleeds", "the gingiva bleeds") == pytest.approx(
        meteor_by_hand(2, 3, 3, 2), abs=1e-9)


# ---- embedding similarity ----

@pytest.fixture(scope="module")
def minilm():
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(resolve_embedding_model("all-MiniLM-L6-v2"), device="cpu")


def numpy_cosine(model, hyps, refs) -> np.ndarray:
    a = np.asarray(model.encode(list(hyps)), dtype=np.float64)
    b = np.asarray(model.encode(list(refs)), dtype=np.float64)
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.fixture(scope="module")
def pair_cosines(minilm) -> np.ndarray:
    return numpy_cosine(minilm, HYPS, REFS)


def test_embedding_similarity_is_the_mean_cosine(pair_cosines):
    metric = EmbeddingSimilarity()
    metric.update(HYPS[:1], REFS[:1])
    metric.update([], [])  # no-op
    metric.update(HYPS[1:], REFS[1:])
    assert float(metric.compute()) == pytest.approx(pair_cosines.mean(), abs=1e-5)
    assert int(metric.count) == len(PAIRS)


def test_embedding_similarity_prefers_a_paraphrase(minilm):
    hyps, refs = ["decay in a back tooth", "the invoice is overdue"], ["caries of a molar"] * 2
    scores = EmbeddingSimilarity().pair_scores(hyps, refs)
    assert scores[0] > scores[1] + 0.2
    assert scores.numpy() == pytest.approx(numpy_cosine(minilm, hyps, refs), abs=1e-5)


def test_embedding_similarity_averages_over_models(pair_cosines):
    # the same model twice (by name and by folder): the average of two equal similarities is unchanged
    metric = EmbeddingSimilarity(["all-MiniLM-L6-v2", resolve_embedding_model("all-MiniLM-L6-v2")])
    assert len(metric.encoders()) == 2
    scores = metric.pair_scores(HYPS, REFS)
    assert scores.numpy() == pytest.approx(pair_cosines, abs=1e-5)
    with pytest.raises(ValueError):
        EmbeddingSimilarity([])


# ---- Chinese ----

def test_tokenize():
    assert tokenize("Caries, tooth-36.") == ["caries", ",", "tooth", "-", "36", "."]
    assert tokenize("牙龈red出血", "zh") == ["牙", "龈", "red", "出", "血"]
    assert tokenize("左下6 Caries，龋坏。", "zh") == ["左", "下", "6", "caries", "，", "龋", "坏", "。"]
    assert tokenize("牙龈出血", "en") == ["牙龈出血"]  # English tokenization keeps a CJK run whole


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_chinese_bleu_matches_sacrebleu_zh(n):
    expected = sacrebleu.metrics.BLEU(max_ngram_order=n, tokenize="zh").corpus_score(ZH_HYPS, [ZH_REFS]).score / 100
    assert 0.2 < expected < 1
    assert bleu(bleu_metrics("zh")[f"bleu{n}"], ZH_HYPS, ZH_REFS) == pytest.approx(expected, abs=1e-5)


def test_chinese_rouge_l_counts_characters():
    from rouge_score import rouge_scorer
    from torchmetrics.functional.text import rouge_score

    class ZhTokenizer:
        def tokenize(self, text):
            return tokenize(text, "zh")

    scorer = rouge_scorer.RougeScorer(["rougeL"], tokenizer=ZhTokenizer())
    expected = np.mean([scorer.score(r, h)["rougeL"].fmeasure for h, r in ZH_PAIRS])
    metric = RougeL("zh")
    metric.update(ZH_HYPS, ZH_REFS)
    assert float(metric.compute()) > 0.5
    assert float(metric.compute()) == pytest.approx(expected, abs=1e-6)
    # why RougeL passes its own tokenizer: torchmetrics' default normaliser deletes every CJK character
    assert float(rouge_score(ZH_HYPS[0], ZH_REFS[0], rouge_keys="rougeL")["rougeL_fmeasure"]) == 0


def test_chinese_meteor_uses_character_tokens():
    from nltk.translate.meteor_score import meteor_score

    metric = Meteor("zh")
    metric.update(ZH_HYPS, ZH_REFS)
    expected = np.mean([meteor_score([tokenize(r, "zh")], tokenize(h, "zh")) for h, r in ZH_PAIRS])
    assert expected > 0.5 and float(metric.compute()) == pytest.approx(expected, abs=1e-9)


def test_resolve_language():
    assert resolve_language("auto", ZH_REFS) == "zh"
    assert resolve_language("auto", ["caries of 36", "牙龈出血"]) == "zh"  # any CJK reference
    assert resolve_language("auto", REFS) == "en"
    assert resolve_language("auto", []) == "en"
    assert resolve_language("en", ZH_REFS) == "en" and resolve_language("zh", REFS) == "zh"
    with pytest.raises(ValueError):
        resolve_language("fr", REFS)


# ---- ReportScores ----

CLASSES = ["caries", "gingivitis", "pulpitis", "periodontitis"]
# (generated report, reference report, true labels)
REPORTS = [
    ("examination: deep cavity on 36\ndiagnosis: caries\ntreatment plan: filling",
     "examination: deep caries on 36\ndiagnosis: caries of 36\ntreatment plan: resin filling", ["caries"]),
    ("examination: red gums\ndiagnosis: gingivitis and tooth decay\ntreatment plan: scaling",
     "examination: red swollen gums\ndiagnosis: gingivitis\ntreatment plan: scaling", ["gingivitis"]),
    ("examination: pain on 46\ndiagnosis: hard to say\ntreatment plan: review",
     "examination: pain on 46\ndiagnosis: pulpitis of 46\ntreatment plan: root canal", ["pulpitis"]),
    ("examination: healthy teeth\ndiagnosis: no disease\ntreatment plan: none",
     "examination: bleeding on probing\ndiagnosis: periodontitis\ntreatment plan: scaling", ["periodontitis"]),
    ("examination: caries on 26\ntreatment plan: filling",  # no diagnosis section at all
     "examination: caries on 26\ndiagnosis: caries and pulpitis\ntreatment plan: root canal",
     ["caries", "pulpitis"]),
    ("examination: deep caries 47\ndiagnosis: pulpitis, caries\ntreatment plan: root canal",
     "examination: deep caries 47\ndiagnosis: caries and pulpitis\ntreatment plan: root canal",
     ["caries", "pulpitis"]),
]


@pytest.fixture(scope="module")
def report_scores():
    return ReportScores(CLASSES, ["all-MiniLM-L6-v2"], language="en")


def report_predictions():
    parser = LabelParser(CLASSES)
    predictions = [Prediction(str(i), "report", "", ref, gen, truth) for i, (gen, ref, truth) in enumerate(REPORTS)]
    for prediction in predictions:
        parse_prediction(prediction, parser)
    return predictions


def test_report_scores_finding_f1_matches_sklearn(report_scores):
    predictions = report_predictions()
    parsed = [p.parsed_labels for p in predictions]
    assert parsed == [["caries"], ["caries", "gingivitis"], None, [], None, ["caries", "pulpitis"]]
    report_scores.reset()
    report_scores.update([p.generated for p in predictions[:4]], [p.reference for p in predictions[:4]],
                         parsed[:4], [p.true_labels for p in predictions[:4]])
    report_scores.update([p.generated for p in predictions[4:]], [p.reference for p in predictions[4:]],
                         parsed[4:], [p.true_labels for p in predictions[4:]])
    result = report_scores.compute()
    pred = np.array([multi_hot(p, CLASSES) for p in parsed])
    true = np.array([multi_hot(p.true_labels, CLASSES) for p in predictions])
    assert result["finding_macro_f1"] == pytest.approx(f1_score(true, pred, average="macro", zero_division=0), abs=1e-6)
    assert result["finding_per_class_f1"] == pytest.approx(
        list(f1_score(true, pred, average=None, zero_division=0)), abs=1e-6)
    assert 0 < result["finding_macro_f1"] < 1
    assert result["unparseable_diagnosis"] == 2


def test_report_scores_text_metrics_match_the_standalone_ones(report_scores, meteor_en, minilm):
    generated, references = [g for g, _, _ in REPORTS], [r for _, r, _ in REPORTS]
    report_scores.reset()
    report_scores.update(generated, references, [None] * len(REPORTS), [t for _, _, t in REPORTS])
    result = report_scores.compute()
    for n in range(1, 5):
        expected = sacrebleu.metrics.BLEU(max_ngram_order=n, tokenize="13a").corpus_score(generated, [references])
        assert result[f"bleu{n}"] == pytest.approx(expected.score / 100, abs=1e-5), n
    rouge = RougeL("en")
    rouge.update(generated, references)
    assert result["rouge_l"] == pytest.approx(float(rouge.compute()), abs=1e-9)
    assert result["meteor"] == pytest.approx(np.mean([meteor_en.score(g, r) for g, r in zip(generated, references)]),
                                             abs=1e-9)
    assert result["embedding_similarity"] == pytest.approx(numpy_cosine(minilm, generated, references).mean(),
                                                           abs=1e-5)
    assert result["embedding_models"] == ["all-MiniLM-L6-v2"]
    assert "English" in result["tokenization"]
    assert result["unparseable_diagnosis"] == len(REPORTS) and result["finding_macro_f1"] == 0


def test_report_scores_without_findings():
    scores = ReportScores(CLASSES, ["all-MiniLM-L6-v2"], language="en", findings=False)
    scores.update([g for g, _, _ in REPORTS], [r for _, r, _ in REPORTS])  # no labels needed
    result = scores.compute()
    assert not any(key.startswith(("finding", "unparseable")) for key in result)
    assert 0 < result["bleu1"] < 1 and 0 < result["meteor"] < 1
