"""The human-readable part of a results folder: report.md (tables shaped like the COde paper's, and the
clinical metrics' tables, see `dentvlm.evaluation.clinical_report`) and the confusion-matrix and per-class
F1 plots."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dentvlm.evaluation.clinical_report import clinical_sections
from dentvlm.evaluation.markdown import table

CLASSIFICATION_COLUMNS = {
    False: [("accuracy", "Accuracy"), ("macro_precision", "Precision"), ("macro_recall", "Recall"),
            ("macro_f1", "F1 (macro)"), ("weighted_f1", "F1 (weighted)")],
    True: [("subset_accuracy", "Subset acc."), ("micro_f1", "F1 (micro)"), ("macro_f1", "F1 (macro)")],
}
REPORT_COLUMNS = [("bleu1", "BLEU-1"), ("bleu2", "BLEU-2"), ("bleu3", "BLEU-3"), ("bleu4", "BLEU-4"),
                  ("meteor", "METEOR"), ("rouge_l", "ROUGE-L"), ("embedding_similarity", "Similarity"),
                  ("finding_macro_f1", "Finding F1")]
COUNT_TITLES = ["Unparseable", "Negated", "Uncertain"]


def percent(value: float, interval: tuple[float, float] | None = None) -> str:
    text = f"{100 * value:.2f}"
    if interval and not np.isnan(interval[0]):
        text += f" [{100 * interval[0]:.1f}, {100 * interval[1]:.1f}]"
    return text


def write_report_md(path: Path, results: dict) -> None:
    """report.md from the metrics.json content `results`."""
    settings, variants = results["settings"], results["variants"]
    classes = settings["classes"]
    lines = ["# dentvlm test results", "",
             f"Shards `{settings['shards']}`, split `{settings['split']}`, modality `{settings['modality']}`, "
             f"{len(classes)} classes ({'multi' if settings['multi_label'] else 'single'}-label). "
             "Scores in %, with 95% bootstrap intervals "
             f"({settings['bootstrap']} resamples) for the headline metrics. Generated answers are parsed "
             "into labels; unparseable answers count as wrong. Only affirmed conditions are labels: "
             "\"Negated\" and \"Uncertain\" count the answers that negate a condition (\"no caries\") or "
             "leave one uncertain (\"suspected caries\").", ""]
    with_task = [(name, v["classification"]) for name, v in variants.items() if "classification" in v]
    if with_task:
        columns = CLASSIFICATION_COLUMNS[settings["multi_label"]]
        lines += ["## Classification", ""]
        rows = [[name, str(m["samples"])] + [percent(m[key], m.get("ci", {}).get(key)) for key, _ in columns]
                + _answer_counts(m, "unparseable") for name, m in with_task]
        lines += table(["Model", "Samples"] + [title for _, title in columns] + COUNT_TITLES, rows) + [""]
        lines += ["Per-class F1:", ""]
        per_class = [[name] + [percent(f) for f in m["per_class_f1"]] for name, m in with_task]
        lines += table(["Model"] + classes, per_class)
        lines += [""]
    lines += clinical_sections(variants, classes, settings["multi_label"])
    with_report = [(name, v["report"]) for name, v in variants.items() if "report" in v]
    if with_report:
        lines += ["## Report generation", "", f"Tokenization: {with_report[0][1]['tokenization']}. "
                  f"Similarity: cosine of sentence embeddings averaged over {with_report[0][1]['embedding_models']}. "
                  "Finding F1: conditions named in the generated diagnosis section vs. the reference's.", ""]
        rows = [[name, str(m["samples"])] + [percent(m[key], m.get("ci", {}).get(key)) for key, _ in REPORT_COLUMNS]
                + _answer_counts(m, "unparseable_diagnosis") for name, m in with_report]
        lines += table(["Model", "Samples"] + [title for _, title in REPORT_COLUMNS] + COUNT_TITLES, rows) + [""]
    lines += _endpoint_table(variants)
    path.write_text("\n".join(lines) + "\n")


def _answer_counts(metrics: dict, unparseable: str) -> list[str]:
    """Unparseable, negated and uncertain answer counts; 0 where an older metrics.json lacks a count."""
    return [str(metrics.get(key, 0)) for key in (unparseable, "negated_answers", "uncertain_answers")]


def _endpoint_table(variants: dict) -> list[str]:
    """Requests, tokens and cost of the variants evaluated through an OpenAI-compatible endpoint."""
    asked = [(name, v["details"]) for name, v in variants.items() if "requests" in v.get("details", {})]
    if not asked:
        return []
    rows = []
    for name, d in asked:
        cost = f"{d['cost']:.4f}" if d.get("cost") is not None else "-"
        rate = f"{d['requests_per_second']:.2f}" if d.get("requests_per_second") else "-"
        rows.append([name, d["endpoint"], d["model"], str(d["requests"]), str(d["cached"]), str(d["retries"]),
                     str(d["refused"]), str(d["prompt_tokens"]), str(d["completion_tokens"]), cost, rate])
    return ["## Endpoints", "", "Variants answered by an OpenAI-compatible API. Tokens and cost count the requests "
            "this run sent (cached answers cost nothing); refused requests count as unparseable answers.", ""] + \
        table(["Model", "Endpoint", "Name", "Requests", "Cached", "Retries", "Refused", "Prompt tokens",
                "Completion tokens", "Cost", "Requests/s"], rows) + [""]


def confusion_counts(predictions: list[dict], classes: list[str], multi_label: bool) -> np.ndarray:
    """Rows: true class (multi-label: + a last "none" row, checkups with none of the classes); columns:
    predicted class + a last "none/unparseable" column. Multi-label checkups add one count per (true,
    predicted) pair, so every checkup is counted at least once."""
    matrix = np.zeros((len(classes) + int(multi_label), len(classes) + 1), dtype=int)
    for p in predictions:
        predicted = p["parsed_labels"] or []
        if not multi_label and len(predicted) != 1:
            predicted = []
        columns = [classes.index(label) for label in predicted] or [len(classes)]
        rows = [classes.index(truth) for truth in p["true_labels"]] or ([len(classes)] if multi_label else [])
        for row in rows:
            for column in columns:
                matrix[row, column] += 1
    return matrix


def plot_confusion(path: Path, matrix: np.ndarray, classes: list[str], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1.2 * len(classes) + 2.5, 1.0 * matrix.shape[0] + 2))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(classes) + 1), classes + ["none /\nunparseable"], rotation=45, ha="right")
    ax.set_yticks(range(matrix.shape[0]), classes + ["none"] * (matrix.shape[0] - len(classes)))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for (row, col), count in np.ndenumerate(matrix):
        ax.text(col, row, str(count), ha="center", va="center",
                color="white" if count > matrix.max() / 2 else "black")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_per_class_f1(path: Path, per_variant: dict[str, list[float]], classes: list[str], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1.4 * len(classes) + 2, 4))
    width = 0.8 / max(1, len(per_variant))
    for n, (name, scores) in enumerate(per_variant.items()):
        ax.bar(np.arange(len(classes)) + n * width, scores, width, label=name)
    ax.set_xticks(np.arange(len(classes)) + 0.4 - width / 2, classes, rotation=30, ha="right")
    ax.set_ylim(0, 1)
    ax.set_ylabel("F1")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)

