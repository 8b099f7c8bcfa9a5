"""Negation- and uncertainty-aware condition parsing (`dentvlm.negation` through `LabelParser.read`), and
its callers: ingestion stores affirmed labels only, metrics count negated and uncertain answers."""

import json

import pytest

from dentvlm.evaluation.report import write_report_md
from dentvlm.evaluation.results import earlier_variants
from dentvlm.ingest.code_release import read_code_release
from dentvlm.ingest.sharegpt import read_sharegpt
from dentvlm.labels import CODE_CONDITIONS, DEFAULT_CLASSES, LabelParser
from dentvlm.metrics.classification import ClassificationScores, parse_prediction
from dentvlm.metrics.report import ReportScores
from dentvlm.negation import CUES
from dentvlm.predictions import Prediction
from tests.unit.test_code_release import HEADER, row, write_release

PARSER = LabelParser(CODE_CONDITIONS)

# (text, affirmed, negated, uncertain)
PHRASINGS = [
    # pre-negation, English
    ("No caries, no gingivitis.", [], ["caries", "gingivitis"], []),
    ("negative for caries", [], ["caries"], []),
    ("not gingivitis", [], ["gingivitis"], []),
    ("Without periodontitis", [], ["periodontitis"], []),
    ("free of caries", [], ["caries"], []),
    ("No evidence of periapical periodontitis", [], ["periapical periodontitis"], []),
    ("no signs of pulpitis", [], ["pulpitis"], []),
    ("Patient denies gum disease", [], ["periodontitis"], []),
    ("gingivitis; no longer caries", ["gingivitis"], ["caries"], []),
    ("absence of malocclusion", [], ["malocclusion"], []),
    ("no tooth decay", [], ["caries"], []),  # synonym
    ("No suspicious caries", [], ["caries"], []),  # a negation reaches over an uncertainty cue
    # post-negation, English
    ("caries ruled out", [], ["caries"], []),
    ("Caries was excluded.", [], ["caries"], []),
    ("caries is not seen", [], ["caries"], []),
    ("pulpitis absent", [], ["pulpitis"], []),
    ("caries (-)", [], ["caries"], []),
    ("Caries: negative", [], ["caries"], []),  # a form answer: the colon value is a post cue
    ("caries: no, gingivitis: yes", ["gingivitis"], ["caries"], []),
    # scope over lists and clause segments
    ("no caries or gingivitis", [], ["caries", "gingivitis"], []),
    ("no caries, gingivitis, or pulpitis", [], ["caries", "gingivitis", "pulpitis"], []),
    ("neither caries nor gingivitis", [], ["caries", "gingivitis"], []),
    ("No caries, gingivitis present", ["gingivitis"], ["caries"], []),
    ("no caries, gingivitis", ["gingivitis"], ["caries"], []),  # a comma ends the scope without or/nor
    ("caries, gingivitis ruled out", [], ["caries", "gingivitis"], []),
    ("gingivitis present, caries ruled out", ["gingivitis"], ["caries"], []),
    ("caries present and gingivitis absent", ["caries"], ["gingivitis"], []),
    # clause boundaries
    ("No disease, but caries on 36.", ["caries"], [], []),
    ("No caries. Gingivitis.", ["gingivitis"], ["caries"], []),
    ("no caries\ngingivitis", ["gingivitis"], ["caries"], []),
    ("Although caries is absent, gingivitis is present", ["gingivitis"], ["caries"], []),
    ("no pulpitis however periodontitis", ["periodontitis"], ["pulpitis"], []),
    ("Apart from caries, no findings", ["caries"], [], []),
    # uncertainty
    ("suspected pulpitis", [], [], ["pulpitis"]),
    ("Possible caries or gingivitis", [], [], ["caries", "gingivitis"]),
    ("probable periodontitis", [], [], ["periodontitis"]),
    ("caries likely", [], [], ["caries"]),
    ("questionable cracked tooth", [], [], ["cracked tooth"]),
    ("rule out caries", [], [], ["caries"]),
    ("Caries cannot be excluded", [], [], ["caries"]),
    ("caries not ruled out", [], [], ["caries"]),  # longest cue wins: not a negation
    ("Pulpitis has not been ruled out", [], [], ["pulpitis"]),
    ("does not exclude caries", [], [], ["caries"]),
    ("Caries?", [], [], ["caries"]),
    ("caries; possible gingivitis", ["caries"], [], ["gingivitis"]),
    ("It could be caries, maybe.", [], [], ["caries"]),
    # pseudo-negations
    ("not only caries but also gingivitis", ["caries", "gingivitis"], [], []),
    ("No doubt caries", ["caries"], [], []),
    # word boundaries and longest phrase
    ("cariesless teeth", [], [], []),
    ("non-caries lesion", [], [], []),
    ("no periapical periodontitis, periodontitis present", ["periodontitis"], ["periapical periodontitis"], []),
    ("caries on 36; no caries on 46", ["caries"], [], []),  # affirmed anywhere: a label
    # Chinese
    ("无龋齿、牙龈炎", [], ["caries", "gingivitis"], []),
    ("未见龋齿", [], ["caries"], []),
    ("未发现牙周炎", [], ["periodontitis"], []),
    ("没有牙髓炎", [], ["pulpitis"], []),
    ("否认牙周炎", [], ["periodontitis"], []),
    ("排除龋齿", [], ["caries"], []),
    ("不排除龋齿", [], [], ["caries"]),  # longest cue wins
    ("龋齿已排除", [], ["caries"], []),
    ("龋齿阴性", [], ["caries"], []),
    ("龋齿（－）", [], ["caries"], []),
    ("龋齿：无", [], ["caries"], []),
    ("未见可疑龋坏", [], ["caries"], []),
    ("未见明显龋齿及牙周炎", [], ["caries", "periodontitis"], []),
    ("不伴牙龈炎", [], ["gingivitis"], []),
    ("疑似牙髓炎，牙周炎", ["periodontitis"], [], ["pulpitis"]),  # the Chinese comma ends a clause
    ("可疑牙隐裂", [], [], ["cracked tooth"]),
    ("考虑牙髓炎", [], [], ["pulpitis"]),
    ("龋齿待排", [], [], ["caries"]),
    ("不除外根尖周炎", [], [], ["periapical periodontitis"]),
    ("牙周炎？", [], [], ["periodontitis"]),
    ("错颌畸形，牙列缺损，楔状缺损", ["malocclusion", "dentition defect", "wedge-shaped defect"], [], []),
    ("诊断：龋病；无牙龈炎", ["caries"], ["gingivitis"], []),
    ("乳牙滞留、冠折、牙列缺失、急性龈乳头炎",
     ["retained primary teeth", "crown fracture", "edentulism", "acute gingival papillitis"], [], []),
    ("慢性根尖周炎", ["periapical periodontitis"], [], []),
]


@pytest.mark.parametrize("text, affirmed, negated, uncertain", PHRASINGS)
def test_phrasings_read_by_polarity(text, affirmed, negated, uncertain):
    reading = PARSER.read(text)
    assert (set(reading.affirmed), set(reading.negated), set(reading.uncertain)) == \
        (set(affirmed), set(negated), set(uncertain))


def test_no_cue_phrase_has_two_meanings():
    phrases = [p for group in CUES.values() for p in group]
    assert len(phrases) == len(set(phrases))


def test_find_all_returns_affirmed_conditions_in_mention_order():
    assert list(PARSER.read("Gingivitis, no pulpitis, caries").affirmed) == ["gingivitis", "caries"]


@pytest.mark.parametrize("text", ["No caries, no gingivitis.", "caries ruled out", "suspected pulpitis",
                                  "无龋齿、牙龈炎", "no disease"])
def test_parse_is_empty_when_nothing_is_affirmed(text):
    assert LabelParser(DEFAULT_CLASSES).parse(text) == []


@pytest.mark.parametrize("text", ["asdf qwerty", "no", "???", "cariesless", ""])
def test_parse_is_none_when_nothing_is_named(text):
    assert LabelParser(DEFAULT_CLASSES).parse(text) is None


def test_parse_keeps_vocabulary_order_of_affirmed_labels():
    assert LabelParser(DEFAULT_CLASSES).parse("caries, no pulpitis, 错颌畸形") == ["malocclusion", "caries"]


def test_stated_labels_for_ingestion():
    assert PARSER.stated_labels("caries; no gingivitis") == ["caries"]
    assert PARSER.stated_labels("No caries, no gingivitis") == []
    assert PARSER.stated_labels("suspected caries") is None  # unknown, not "none"
    assert PARSER.stated_labels("nothing to see") is None


def write_sharegpt(tmp_path, answers):
    entries = [{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": a}]}
               for a in answers]
    path = tmp_path / "data.json"
    path.write_text(json.dumps(entries, ensure_ascii=False))
    found, _ = read_sharegpt(path, "salt", LabelParser(DEFAULT_CLASSES))
    return [item.checkup for item in found]


def test_sharegpt_negated_answers_are_labelled_without_labels(tmp_path):
    answers = ["No caries, no gingivitis", "Malocclusion, no caries", "Suspected caries", "无龋齿、牙龈炎",
               "错颌畸形，牙周炎", "diagnosis: caries ruled out; pulpitis", "diagnosis: possible caries"]
    checkups = write_sharegpt(tmp_path, answers)
    assert [(c.labels, c.labelled) for c in checkups] == [
        ([], True), (["malocclusion"], True), ([], False), ([], True), (["malocclusion", "periodontitis"], True),
        (["pulpitis"], True), ([], False)]


def test_code_row_stores_affirmed_labels_only(tmp_path):
    rows = [row("C1", anomalies="caries; no gingivitis"), row("C2", anomalies="无龋齿，牙龈炎"),
            row("C3", anomalies="No caries"), row("C4", anomalies="suspected pulpitis")]
    found, _ = read_code_release(write_release(tmp_path, rows, HEADER), "salt", LabelParser(DEFAULT_CLASSES))
    checkups = [item.checkup for item in found]
    assert [(c.labels, c.labelled) for c in checkups] == [
        (["caries"], True), (["gingivitis"], True), ([], True), ([], False)]


ANSWERS = ["caries", "No caries, no gingivitis", "suspected pulpitis", "caries, possible gingivitis, no pulpitis",
           "xyzzy"]


def predictions(task="classification", answers=ANSWERS):
    parser = LabelParser(DEFAULT_CLASSES)
    made = [Prediction(str(i), task, "", "", answer) for i, answer in enumerate(answers)]
    for prediction in made:
        parse_prediction(prediction, parser)
    return made


def test_parse_prediction_records_negated_and_uncertain_conditions():
    made = predictions()
    assert [p.parsed_labels for p in made] == [["caries"], [], [], ["caries"], None]
    assert [p.negated_labels for p in made] == [[], ["caries", "gingivitis"], [], ["pulpitis"], []]
    assert [p.uncertain_labels for p in made] == [[], [], ["pulpitis"], ["gingivitis"], []]


@pytest.mark.parametrize("multi_label", [True, False])
def test_classification_scores_count_negated_and_uncertain_answers(multi_label):
    made = predictions()
    scores = ClassificationScores(DEFAULT_CLASSES, multi_label)
    for batch in (made[:2], made[2:]):
        scores.update([p.parsed_labels for p in batch], [["caries"] for _ in batch],
                      [p.negated_labels for p in batch], [p.uncertain_labels for p in batch])
    result = scores.compute()
    assert (result["negated_answers"], result["uncertain_answers"], result["unparseable"]) == (2, 2, 1)
    scores.reset()
    scores.update([["caries"]], [["caries"]])  # callers that pass no mentions count none
    assert scores.compute()["negated_answers"] == 0


def test_report_scores_count_negated_and_uncertain_diagnoses():
    made = predictions("report", [f"diagnosis: {a}" for a in ANSWERS])
    scores = ReportScores(DEFAULT_CLASSES, ["all-MiniLM-L6-v2"], language="en")
    scores.update([p.generated for p in made], [p.generated for p in made], [p.parsed_labels for p in made],
                  [["caries"] for _ in made], [p.negated_labels for p in made], [p.uncertain_labels for p in made])
    result = scores.compute()
    assert (result["negated_answers"], result["uncertain_answers"], result["unparseable_diagnosis"]) == (2, 2, 1)


def test_new_fields_round_trip_through_predictions_jsonl(tmp_path):
    settings = {"shards": "s", "split": "test", "classes": ["caries"], "multi_label": True, "modality": "both",
                "max_images": 8}
    (tmp_path / "metrics.json").write_text(json.dumps({"settings": settings, "variants": {"m": {}}}))
    made = predictions()
    rows = [json.dumps({"variant": "m", **p.to_dict()}) for p in made]
    (tmp_path / "predictions.jsonl").write_text("\n".join(rows) + "\n")
    kept = earlier_variants(tmp_path, settings)["m"]["predictions"]
    assert [(p.negated_labels, p.uncertain_labels) for p in kept] == \
        [(p.negated_labels, p.uncertain_labels) for p in made]
    assert "thumbnail" not in made[0].to_dict()


def test_report_md_shows_negated_and_uncertain_counts_and_reads_older_metrics(tmp_path):
    metrics = {"samples": 5, "subset_accuracy": 0.4, "micro_f1": 0.5, "macro_f1": 0.5, "unparseable": 1,
               "per_class_f1": [0.5]}
    results = {"settings": {"shards": "s", "split": "test", "modality": "both", "classes": ["caries"],
                            "multi_label": True, "bootstrap": 0},
               "variants": {"new": {"classification": {**metrics, "negated_answers": 2, "uncertain_answers": 3}},
                            "old": {"classification": metrics}}}
    write_report_md(tmp_path / "report.md", results)
    text = (tmp_path / "report.md").read_text()
    assert "| Unparseable | Negated | Uncertain |" in text
    assert text.count("| 1 | 2 | 3 |") == 1 and text.count("| 1 | 0 | 0 |") == 1


def test_metric_callbacks_pass_the_mentions_on():
    """The callbacks that feed the scores during validation and test hand the negated and uncertain
    conditions through (without them the counts would stay 0 in every real run)."""
    from dentvlm.metrics.callbacks import ClassificationMetrics

    made = predictions()
    scores = ClassificationScores(DEFAULT_CLASSES, True)
    for p in made:
        p.true_labels = ["caries"]
    ClassificationMetrics().update(scores, made)
    result = scores.compute()
    assert (result["negated_answers"], result["uncertain_answers"]) == (2, 2)
