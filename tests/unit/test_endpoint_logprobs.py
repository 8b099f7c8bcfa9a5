"""Class probabilities estimated from an endpoint's top log-probabilities at each answer slot."""

from math import log

import pytest

from dentvlm.endpoint.logprobs import TokenChoice, estimated_probabilities, slot_tokens

CLASSES = ("malocclusion", "gingivitis", "caries", "pulpitis")


def token(text, **alternatives):
    return TokenChoice(text, tuple((t.replace("_", " "), log(p)) for t, p in alternatives.items()))


def test_slots_are_the_answer_start_and_each_item_after_a_comma():
    tokens = [token("ging"), token("ivitis"), token(","), token(" car"), token("ies")]
    assert slot_tokens(tokens) == [0, 3]
    assert slot_tokens([token(" none")]) == [0]
    assert slot_tokens([token("ging"), token("ivitis,"), token(" car"), token("ies")]) == [0, 2]


def test_multi_label_probabilities_combine_the_slots_where_a_class_could_come():
    tokens = [token("ging", ging=0.8, mal=0.1, car=0.05), token("ivitis"), token(","),
              token("_car", _car=0.7, _pul=0.2), token("ies")]
    found = estimated_probabilities(tokens, CLASSES, multi_label=True)
    assert found["malocclusion"] == pytest.approx(0.1)  # only the first slot: it comes before gingivitis
    assert found["gingivitis"] == pytest.approx(0.8)
    assert found["caries"] == pytest.approx(1 - (1 - 0.05) * (1 - 0.7))
    assert found["pulpitis"] == pytest.approx(1 - (1 - 0.0) * (1 - 0.2))


def test_the_none_answer_leaves_the_first_slots_alternatives():
    found = estimated_probabilities([token("none", none=0.9, car=0.06)], CLASSES, multi_label=True)
    assert found["caries"] == pytest.approx(0.06) and found["malocclusion"] == 0.0


def test_single_label_normalises_the_first_slot_over_the_classes():
    found = estimated_probabilities([token("pul", pul=0.6, car=0.2, x=0.2)], CLASSES, multi_label=False)
    assert found == pytest.approx({"malocclusion": 0, "gingivitis": 0, "caries": 0.25, "pulpitis": 0.75})


def test_no_evidence_is_none_not_zeros():
    assert estimated_probabilities([], CLASSES, multi_label=True) is None
    assert estimated_probabilities([token("The", The=0.9)], CLASSES, multi_label=False) is None
