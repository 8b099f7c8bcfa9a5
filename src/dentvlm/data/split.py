"""Patient-level train/val/test split, stratified by label as far as patient grouping allows.

No patient is in two splits. Patients are placed greedily, rarest label first, each into the split
whose per-class and size targets it helps most (the iterative-stratification idea applied to
groups), so the small splits still see the rare classes.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Sequence

SPLITS = ("train", "val", "test")


def split_sizes(total: int, val: float, test: float) -> dict[str, int]:
    """Checkup targets per split; a size < 1 is a fraction of `total`, >= 1 a count."""
    sizes = {}
    for name, size in (("val", val), ("test", test)):
        if size < 0:
            raise ValueError(f"{name} size must be >= 0, got {size}")
        sizes[name] = round(size * total) if size < 1 else int(size)
    if sizes["val"] + sizes["test"] > total:
        raise ValueError(f"val ({sizes['val']}) + test ({sizes['test']}) exceed the {total} checkups")
    sizes["train"] = total - sizes["val"] - sizes["test"]
    return sizes


def patient_split(
    patients: Sequence[str], labels: Sequence[Sequence[str]], val: float, test: float, seed: int
) -> list[str]:
    """Assign each checkup a split so that every patient's checkups share one split.

    Args:
        patients: Patient key of each checkup.
        labels: Labels of each checkup (stratification targets; "no label" is its own stratum).
        val: Validation size: fraction (< 1) or checkup count (>= 1).
        test: Test size: fraction (< 1) or checkup count (>= 1).
        seed: Seed for tie-breaking order; the same inputs and seed give the same split.

    Returns:
        The split name of each checkup, in input order.
    """
    targets = split_sizes(len(patients), val, test)
    groups: dict[str, list[int]] = defaultdict(list)
    for index, patient in enumerate(patients):
        groups[patient].append(index)
    strata = [tuple(sorted(set(ls))) or ("<none>",) for ls in labels]
    class_totals = Counter(c for s in strata for c in s)
    wanted = {
        split: {c: n * targets[split] / max(len(patients), 1) for c, n in class_totals.items()} for split in SPLITS
    }
    order = sorted(groups)
    random.Random(seed).shuffle(order)
    # Rarest class first, then larger groups first: the hard-to-place patients go while there is room.
    rarity = {p: min(class_totals[c] for i in groups[p] for c in strata[i]) for p in order}
    order.sort(key=lambda p: (rarity[p], -len(groups[p])))

    filled = {split: 0 for split in SPLITS}
    have = {split: Counter() for split in SPLITS}
    assignment: dict[str, str] = {}
    for patient in order:
        members = groups[patient]
        group_classes = Counter(c for i in members for c in strata[i])
        open_splits = [s for s in SPLITS if filled[s] + len(members) <= targets[s]] or ["train"]

        def need(split: str, group_classes: Counter = group_classes) -> tuple[float, float]:
            """How much `split` still wants this patient's classes, then its size."""
            class_need = sum(
                (wanted[split][c] - have[split][c]) / max(wanted[split][c], 1e-9) * k
                for c, k in group_classes.items()
            )
            return class_need, (targets[split] - filled[split]) / max(targets[split], 1)

        best = max(open_splits, key=need)
        assignment[patient] = best
        filled[best] += len(members)
        have[best].update(group_classes)
    return [assignment[p] for p in patients]
