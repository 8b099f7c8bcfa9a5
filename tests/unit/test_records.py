import json

import pytest

from dentvlm.records import Checkup, pseudonym


def make(**changes):
    record = dict(key="abc123", patient="p1", modalities=["photograph"], info={"age": "40"},
                  report={"diagnosis": "caries of 36"}, labels=["caries"], labelled=True, conversation=None)
    record.update(changes)
    return json.dumps(record).encode()


def test_round_trip():
    checkup = Checkup.from_json(make(), "here")
    assert Checkup.from_json(checkup.to_json(), "again") == checkup


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"key": "a.b"}, "key 'a.b' must match"),
        ({"modalities": ["xray"]}, "unknown image modalities"),
        ({"info": {"name": "Ann"}}, "unknown or non-text entries"),
        ({"labels": "caries"}, "'labels' must be list"),
        ({"labelled": "yes"}, "'labelled' must be bool"),
        ({"extra": 1}, "unknown record keys"),
        ({"conversation": [{"role": "user", "content": "no image"}]}, "0 <image> placeholders but 1 images"),
        ({"conversation": [{"role": "wizard", "content": "<image>"}]}, "conversation must be"),
    ],
)
def test_invalid_records_name_the_problem(changes, message):
    with pytest.raises(ValueError, match=message) as info:
        Checkup.from_json(make(**changes), "shard-0.tar sample 'x'")
    assert "shard-0.tar sample 'x'" in str(info.value)


def test_not_json():
    with pytest.raises(ValueError, match="not valid UTF-8 JSON"):
        Checkup.from_json(b"\xff\xfe", "w")


def test_pseudonym_is_stable_per_salt_and_hides_the_identifier():
    a = pseudonym("salt", "patient", "P00017")
    assert a == pseudonym("salt", "patient", "P00017")
    assert a != pseudonym("other", "patient", "P00017")
    assert a != pseudonym("salt", "checkup", "P00017")
    assert "P00017" not in a and len(a) == 20


def test_task_variants_follow_labels_and_report():
    checkup = Checkup.from_json(make(labels=["caries", "gingivitis"]), "w")
    assert checkup.tasks(("caries", "gingivitis")) == {"classification", "report"}
    assert checkup.tasks(("caries",)) == {"classification", "classification_single", "report"}
    # multi-label classification keeps a labelled checkup with none of the classes (its answer: "none");
    # the single-label task keeps exactly one class
    assert checkup.tasks(("pulpitis",)) == {"classification", "report"}
    unknown = Checkup.from_json(make(labels=[], labelled=False), "w")
    assert unknown.tasks(("caries",)) == {"report"}
    healthy = Checkup.from_json(make(labels=[], labelled=True), "w")
    assert healthy.tasks(("caries",)) == {"classification", "report"}
