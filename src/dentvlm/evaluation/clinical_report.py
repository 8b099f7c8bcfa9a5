"""report.md's clinical sections, from metrics.json's per-variant ``clinical`` entries: per variant a table
shaped for a paper (rows: classes and macro; columns: AUROC and AP with intervals, and sensitivity,
specificity, PPV, NPV at each operating point with its threshold) and a subgroup table with the largest gaps,
then one calibration table of all variants. "n/a": not defined on this test split; "not available": the
variant lacks what the metric needs (the reason is written beside the table)."""

from __future__ import annotations

from collections.abc import Sequence

from dentvlm.evaluation.markdown import UNDEFINED, pct, table
from dentvlm.evaluation.operating_points import RATES
from dentvlm.evaluation.subgroups import metric_names

NA = "not available"
RATE_TITLES = {"sensitivity": "Sens", "specificity": "Spec", "ppv": "PPV", "npv": "NPV"}
METRIC_TITLES = {"subset_accuracy": "Subset acc.", "accuracy": "Accuracy", "macro_f1": "F1 (macro)",
                 "macro_auroc": "AUROC (macro)"}
GAP_TITLES = {"subset_accuracy": "subset accuracy", "accuracy": "accuracy", "macro_f1": "macro F1",
              "macro_auroc": "macro AUROC"}


def _points(target: float) -> list[tuple[str, str]]:
    return [("generated_answers", "Answers"), ("youden", "Youden"), ("target_sensitivity", f"Sens≥{100 * target:g}%")]


def _discrimination_cells(discrimination: dict, row: str | None) -> list[str]:
    if "not_available" in discrimination:
        return [NA, NA]
    values = discrimination["macro"] if row is None else discrimination["per_class"][row]
    return [pct(values[key], values["ci"][key]) for key in ("auroc", "average_precision")]


def _point_cells(point: dict, row: str | None, thresholds: bool) -> list[str]:
    if "not_available" in point:
        return [NA] * (4 + thresholds)
    values = point["macro"] if row is None else point["per_class"][row]
    cells = [pct(values[rate]) for rate in RATES]
    if thresholds:  # the macro row has no threshold of its own: each class has its own
        threshold = None if row is None else values["threshold"]
        cells.insert(0, "-" if row is None else UNDEFINED if threshold is None else f"{threshold:.3g}")
    return cells


def class_table(entry: dict, classes: Sequence[str]) -> list[str]:
    points = _points(entry["settings"]["target_sensitivity"])
    header = ["Class", "AUROC", "AP"]
    for key, title in points:
        header += [f"{title} thr."] if key != "generated_answers" else []
        header += [f"{title} {t}" for t in RATE_TITLES.values()]
    rows = []
    for row in [*classes, None]:
        cells = [row or "macro"] + _discrimination_cells(entry["discrimination"], row)
        for key, _ in points:
            cells += _point_cells(entry["operating_points"][key], row, key != "generated_answers")
        rows.append(cells)
    return table(header, rows) + [""]


def _notes(entry: dict) -> list[str]:
    val = entry["val_samples"]
    notes = [f"{entry['samples']} test checkups; "
             + (f"{val} validation checkups, used only to choose thresholds." if val else "no validation checkups.")]
    discrimination = entry["discrimination"]
    if "not_available" in discrimination:  # thresholds too are probabilities: this says it for them
        return [" ".join([*notes, f"Probability metrics not available: {discrimination['not_available']}."]), ""]
    for key, what in (("auroc_not_defined", "AUROC not defined (one truth value in the test split)"),
                      ("average_precision_not_defined", "AP not defined (no positive in the test split)")):
        if discrimination[key]:
            notes.append(f"{what} for {len(discrimination[key])} class(es): {', '.join(discrimination[key])}.")
    agreement = entry.get("agreement", {})
    if "label_set" in agreement:
        rates = agreement["per_class"].values()
        notes.append(f"Probabilities thresholded at {agreement['threshold']:g} agree with the generated answer on the "
                     f"whole label set for {pct(agreement['label_set'])}% of the {agreement['checkups']} parseable "
                     f"answers (per class {pct(min(rates))}-{pct(max(rates))}%).")
    points = entry["operating_points"]
    reasons = dict.fromkeys(points[key].get("not_available") for key in ("youden", "target_sensitivity"))
    notes += [f"Validation-split thresholds not available: {reason}." for reason in reasons if reason]
    return [" ".join(notes), ""]


def subgroup_table(subgroups: dict, multi_label: bool) -> list[str]:
    if "not_available" in subgroups:
        return [f"Subgroups not available: {subgroups['not_available']}.", ""]
    names = metric_names(multi_label)
    rows = []
    for kind, values in subgroups["groups"].items():
        for value, row in values.items():
            if "not_scored" in row:
                cells = ["too few to score"] * len(names)
            else:
                cells = [pct(row[name], row["ci"].get(name)) for name in names[:2]]
                cells.append(NA if "macro_auroc_not_available" in subgroups else pct(row["macro_auroc"],
                                                                                     row["ci"].get("macro_auroc")))
            rows.append([kind, value, str(row["n"])] + cells)
    lines = [f"Subgroups (groups under {subgroups['min_group_size']} test checkups are counted, not scored):", ""]
    lines += table(["Group", "Value", "n"] + [METRIC_TITLES[name] for name in names], rows) + [""]
    return lines + _gap_lines(subgroups["largest_gaps"]) + [""]


def _gap_lines(gaps: dict[str, dict]) -> list[str]:
    lines = []
    for kind, per_metric in gaps.items():
        if not per_metric:
            lines.append(f"- {kind}: fewer than two scored groups")
            continue
        parts = [f"{GAP_TITLES[name]} {pct(g['high']['value'])} ({g['high']['group']}, n={g['high']['n']}) vs "
                 f"{pct(g['low']['value'])} ({g['low']['group']}, n={g['low']['n']})" for name, g in per_metric.items()]
        lines.append(f"- largest gap: {kind}, " + "; ".join(parts))
    return lines


def calibration_table(entries: dict[str, dict], classes: Sequence[str]) -> list[str]:
    bins = next(e["settings"]["calibration_bins"] for e in entries.values())
    rows = []
    for name, entry in entries.items():
        calibration = entry.get("calibration", {"not_available": entry.get("not_available")})
        if "not_available" in calibration:
            rows.append([name] + [NA] * (len(classes) + 1))
        else:
            rows.append([name] + [pct(calibration["per_class"][c]) for c in classes] + [pct(calibration["pooled"])])
    return ["### Calibration", "",
            f"Expected calibration error (ECE, %, lower is better; torchmetrics' binary calibration error): "
            f"{bins} equal-width probability bins, L1 norm: |observed frequency - mean probability| per bin, "
            "weighted by the bin's share of (checkup, class) pairs. Per class, and pooled over all classes. "
            "Reliability diagrams: `reliability_<variant>.png`.", "",
            *table(["Model", *classes, "Pooled"], rows), ""]


def clinical_sections(variants: dict[str, dict], classes: Sequence[str], multi_label: bool) -> list[str]:
    """The report.md lines of the variants' ``clinical`` entries (none when no variant has one)."""
    entries = {name: v["clinical"] for name, v in variants.items() if "clinical" in v}
    if not entries:
        return []
    s = next(iter(entries.values()))["settings"]
    lines = ["## Clinical metrics", "",
             "From the model's probability of each condition, one-vs-rest per class on the multi-hot truth. "
             f"AUROC and AP (average precision) in %, with 95% bootstrap intervals ({s['bootstrap']} resamples of "
             "the test checkups; a resample that leaves a class with one truth value does not count towards its "
             "interval); macro: the mean over the classes where defined. Sensitivity, specificity, PPV and NPV "
             "in % at three operating points: the generated answers (parsed labels); Youden's J (the threshold "
             "maximising sensitivity + specificity - 1 on the validation split); and the highest threshold whose "
             f"validation sensitivity is at least {100 * s['target_sensitivity']:g}%. Thresholds (thr.) are per-class "
             "probabilities chosen on the validation split and applied unchanged to the test split; a probability "
             "at or above the threshold is a positive. n/a: not defined on this split; not available: the variant "
             "lacks what the metric needs. Curves: `roc.png`, `precision_recall.png`.", ""]
    for name, entry in entries.items():
        lines += [f"### {name}", ""]
        if "not_available" in entry:
            lines += [f"Not available: {entry['not_available']}.", ""]
            continue
        lines += _notes(entry) + class_table(entry, classes) + subgroup_table(entry["subgroups"], multi_label)
    return lines + calibration_table(entries, classes)
