import random
from collections import Counter

import pytest

from dentvlm.data.split import patient_split, split_sizes


def population(seed=0, patients=300):
    rng = random.Random(seed)
    weights = {"malocclusion": 50, "gingivitis": 25, "caries": 10, "pulpitis": 6, "periodontitis": 4}
    rows = []
    for p in range(patients):
        for _ in range(rng.choice((1, 1, 1, 2, 3))):
            rows.append((f"P{p}", rng.choices(list(weights), list(weights.values()))))
    return [r[0] for r in rows], [r[1] for r in rows]


def test_no_patient_in_two_splits_and_deterministic():
    patients, labels = population()
    splits = patient_split(patients, labels, val=0.1, test=0.2, seed=1)
    owner = {}
    for patient, split in zip(patients, splits):
        assert owner.setdefault(patient, split) == split
    assert splits == patient_split(patients, labels, val=0.1, test=0.2, seed=1)
    assert splits != patient_split(patients, labels, val=0.1, test=0.2, seed=2)


def test_sizes_follow_fractions_or_counts():
    patients, labels = population()
    counts = Counter(patient_split(patients, labels, val=0.1, test=60, seed=0))
    assert abs(counts["test"] - 60) <= 3
    assert abs(counts["val"] - round(0.1 * len(patients))) <= 3
    assert sum(counts.values()) == len(patients)


def test_stratified_rare_classes_reach_every_split():
    patients, labels = population(seed=0)
    splits = patient_split(patients, labels, val=0.15, test=0.15, seed=0)
    totals = Counter(c for ls in labels for c in ls)
    for split, share in (("val", 0.15), ("test", 0.15)):
        got = Counter(c for ls, s in zip(labels, splits) if s == split for c in ls)
        for cls, total in totals.items():
            # within 2.5 checkups of its share; a random patient assignment is off by 5-10 here
            assert abs(got[cls] - share * total) <= 2.5, (split, cls, got[cls], total)


def test_invalid_sizes():
    with pytest.raises(ValueError, match="exceed"):
        split_sizes(10, 6, 6)
    with pytest.raises(ValueError, match=">= 0"):
        split_sizes(10, -0.1, 0.1)
