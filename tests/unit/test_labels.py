import pytest

from dentvlm.labels import DEFAULT_CLASSES, LabelParser


@pytest.fixture
def parser():
    return LabelParser(DEFAULT_CLASSES)


def test_parse_returns_vocabulary_order_and_handles_case_and_punctuation(parser):
    assert parser.parse("Gingivitis; MALOCCLUSION.") == ["malocclusion", "gingivitis"]


def test_synonyms_map_to_normalised_names(parser):
    assert parser.parse("tooth decay and missing teeth") == ["dentition defect", "caries"]


def test_longest_phrase_wins_over_its_substring():
    parser = LabelParser(["periodontitis", "periapical periodontitis"])
    assert parser.parse("chronic periapical periodontitis of 36") == ["periapical periodontitis"]
    assert parser.parse("periodontitis and periapical periodontitis") == ["periodontitis", "periapical periodontitis"]


def test_whole_words_only(parser):
    assert parser.parse("cariesless") is None


def test_no_finding_is_empty_not_unparseable(parser):
    assert parser.parse("No disease.") == []
    assert parser.parse("the picture is blurry") is None


def test_names_outside_the_vocabulary_are_found_but_not_returned(parser):
    assert list(parser.read("cracked tooth, caries").affirmed) == ["cracked tooth", "caries"]
    assert parser.parse("cracked tooth") == []


def test_class_list_is_validated():
    with pytest.raises(ValueError, match="duplicates"):
        LabelParser(["caries", "Caries"])
