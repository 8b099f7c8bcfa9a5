"""Subgroups read from a clinic's free text, English or Chinese; what cannot be read is "unknown"."""

import pytest

from dentvlm.data.groups import age_band, checkup_groups, photograph_band
from dentvlm.records import Checkup


@pytest.mark.parametrize(("text", "band"), [("34", "18-39"), ("34 years", "18-39"), ("17", "<18"), ("60", "60+"),
                                            ("45岁", "40-59"), ("", "unknown"), ("adult", "unknown")])
def test_age_bands(text, band):
    assert age_band(text) == band


@pytest.mark.parametrize(("gender", "visit", "expected"), [
    ("Female", "First visit", ("female", "first")), ("男", "复诊", ("male", "follow-up")),
    ("M", "follow up", ("male", "follow-up")), ("", "", ("unknown", "unknown")),
    ("other", "x", ("unknown", "unknown"))])
def test_gender_and_visit(gender, visit, expected):
    groups = checkup_groups(Checkup("k", "p", ["photograph"], {"gender": gender, "visit_type": visit}))
    assert (groups["gender"], groups["visit_type"]) == expected


def test_images_groups():
    checkup = Checkup("k", "p", ["photograph"] * 5 + ["radiograph"])
    assert checkup_groups(checkup)["radiographs"] == "with" and checkup_groups(checkup)["photographs"] == "4-6"
    assert [photograph_band(n) for n in (0, 1, 3, 4, 6, 7, 26)] == ["0", "1-3", "1-3", "4-6", "4-6", "7+", "7+"]
