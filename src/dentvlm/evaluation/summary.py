"""What `dentvlm test` prints when it is done: a compact block per evaluated variant with the report's
headline numbers (all in %, with the 95% intervals), and where the results folder is."""

from __future__ import annotations

from pathlib import Path

from dentvlm.evaluation.markdown import pct
from dentvlm.evaluation.report import CLASSIFICATION_COLUMNS, REPORT_COLUMNS

# The few numbers a terminal table shows per task (report.md has them all).
HEADLINE = {
    "classification": {True: ("subset_accuracy", "micro_f1", "macro_f1"),
                       False: ("accuracy", "macro_f1", "weighted_f1")},
    "report": ("bleu4", "meteor", "rouge_l", "embedding_similarity", "finding_macro_f1"),
}


def _titles() -> dict[str, str]:
    titles = {key: title for columns in CLASSIFICATION_COLUMNS.values() for key, title in columns}
    return {**titles, **dict(REPORT_COLUMNS)}


def headline(task: str, metrics: dict, multi_label: bool) -> list[tuple[str, str]]:
    """(title, "70.0 [58.3, 80.0]") per headline metric of one task."""
    keys = HEADLINE[task][multi_label] if task == "classification" else HEADLINE[task]
    titles, cells = _titles(), []
    for key in keys:
        if key not in metrics:
            continue
        cells.append((titles.get(key, key), pct(metrics[key], metrics.get("ci", {}).get(key))))
    return cells


def clinical_headline(clinical: dict) -> list[tuple[str, str]]:
    """Macro AUROC with its interval, or why there is none (an endpoint without log-probabilities)."""
    discrimination = clinical.get("discrimination")
    if not discrimination:
        return []
    if "not_available" in discrimination:
        return [("AUROC (macro)", "not available")]
    macro = discrimination["macro"]
    return [("AUROC (macro)", pct(macro.get("auroc"), macro.get("ci", {}).get("auroc")))]


def variant_table(name: str, entry: dict, multi_label: bool) -> list[str]:
    """The lines of one variant: what was scored, then one line per task (scores in %)."""
    details = entry.get("details", {})
    scored = details.get("checkpoint", {}).get("path") or details.get("endpoint") or details.get("base_model") or ""
    lines = [f"{name}" + (f"  ({scored})" if scored else "")]
    for task in ("classification", "report"):
        if task not in entry:
            continue
        metrics = entry[task]
        counts = f"{metrics.get('samples', 0)} checkups"
        if task == "classification":
            counts += f", {metrics.get('unparseable', 0)} unparseable"
        cells = headline(task, metrics, multi_label)
        if task == "classification":
            cells += clinical_headline(entry.get("clinical", {}))
        lines.append(f"  {task} ({counts}), %: " + " · ".join(f"{title} {value}" for title, value in cells))
    return lines


def terminal_summary(results: dict, names: list[str], out_dir: Path) -> str:
    """The tables of the variants `names` from a results folder's metrics.json content, and its path."""
    multi_label = results["settings"]["multi_label"]
    lines = []
    for name in names:
        if name in results["variants"]:
            lines += variant_table(name, results["variants"][name], multi_label) + [""]
    lines.append(f"results: {out_dir}/report.md (tables), metrics.json, predictions.jsonl, plots")
    return "\n".join(lines)
