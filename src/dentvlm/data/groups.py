"""A checkup's subgroups, for metrics per group of patients: gender, age band, visit type, whether it has
radiographs, and how many photographs. Values are normalised from the free text a clinic export holds
(English or Chinese); what cannot be read is "unknown", never a guess."""

from __future__ import annotations

import re

from dentvlm.records import Checkup

AGE_BANDS = ((0, 18, "<18"), (18, 40, "18-39"), (40, 60, "40-59"), (60, 200, "60+"))
GENDERS = {"male": "male", "m": "male", "man": "male", "男": "male", "男性": "male",
           "female": "female", "f": "female", "woman": "female", "女": "female", "女性": "female"}
VISITS = {"first": "first", "initial": "first", "new": "first", "初诊": "first",
          "follow-up": "follow-up", "follow up": "follow-up", "followup": "follow-up", "return": "follow-up",
          "revisit": "follow-up", "复诊": "follow-up"}
GROUP_NAMES = ("gender", "age_band", "visit_type", "radiographs", "photographs")


def age_band(text: str) -> str:
    match = re.search(r"\d{1,3}", text or "")
    if not match:
        return "unknown"
    age = int(match.group())
    return next((name for low, high, name in AGE_BANDS if low <= age < high), "unknown")


def _lookup(table: dict[str, str], text: str) -> str:
    key = re.sub(r"\s+", " ", (text or "").strip().lower().rstrip("."))
    if key in table:
        return table[key]
    return next((value for word, value in table.items() if len(word) > 2 and word in key), "unknown")


def photograph_band(count: int) -> str:
    return "0" if count == 0 else "1-3" if count <= 3 else "4-6" if count <= 6 else "7+"


def checkup_groups(checkup: Checkup) -> dict[str, str]:
    """The subgroup of `checkup` for each of `GROUP_NAMES` (images counted as stored in the shard)."""
    info = checkup.info
    photos = sum(m == "photograph" for m in checkup.modalities)
    return {
        "gender": _lookup(GENDERS, info.get("gender", "")),
        "age_band": age_band(info.get("age", "")),
        "visit_type": _lookup(VISITS, info.get("visit_type", "")),
        "radiographs": "with" if "radiograph" in checkup.modalities else "without",
        "photographs": photograph_band(photos),
    }
