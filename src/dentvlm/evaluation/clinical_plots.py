"""The clinical metrics' figures in a results folder.

- ``roc.png`` and ``precision_recall.png``: a panel per class, each variant with probabilities a line in it
  (its AUROC or AP in the legend). A paper compares models on one condition at a time, so the models share
  a panel (one figure per variant would make the reader compare across figures); each variant's generated
  answers are marked on its ROC line (x): where the answer stands against every threshold the model allows.
  ``roc_<variant>.png`` and ``precision_recall_<variant>.png`` hold one variant's lines, for W&B, where
  every image belongs to a variant.
- ``reliability_<variant>.png``: the pooled reliability diagram (mean probability against observed frequency
  per equal-width bin; the diagonal is perfect calibration, counts beside the points) above the bins' counts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torchmetrics.functional.classification import binary_precision_recall_curve, binary_roc

from dentvlm.evaluation.clinical_data import Scored


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _panels(plt, count: int):
    columns = min(3, count)
    rows = math.ceil(count / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.9 * rows), squeeze=False)
    for ax in axes.flat[count:]:
        ax.set_visible(False)
    return fig, list(axes.flat)


def _column(scored: Scored, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    return (torch.from_numpy(np.ascontiguousarray(scored.probabilities[:, k])),
            torch.from_numpy(scored.truth[:, k].astype(np.int64)))


def plot_clinical(out: Path, variants: dict[str, Scored], clinical: dict[str, dict], classes: Sequence[str]) -> None:
    """Every clinical figure of the `variants` (their test splits and metrics.json ``clinical`` entries); a
    figure without data is removed, so that no earlier run's stands in for it."""
    stale = []
    for name, entry in clinical.items():
        calibration = entry.get("calibration", {})
        if "reliability" in calibration:
            plot_reliability(out / f"reliability_{name}.png", calibration, f"calibration: {name}")
        else:
            stale.append(out / f"reliability_{name}.png")
        stale += _stale(out, f"_{name}", plot_curves(out, {name: variants[name]}, clinical, classes, f"_{name}"))
    stale += _stale(out, "", plot_curves(out, variants, clinical, classes))
    for path in stale:
        path.unlink(missing_ok=True)


def _stale(out: Path, suffix: str, written: list[Path]) -> list[Path]:
    return [] if written else [out / f"roc{suffix}.png", out / f"precision_recall{suffix}.png"]


def plot_curves(out: Path, variants: dict[str, Scored], clinical: dict[str, dict], classes: Sequence[str],
                suffix: str = "") -> list[Path]:
    """``roc<suffix>.png`` and ``precision_recall<suffix>.png`` of the `variants` with probabilities; the files
    written (none without probabilities)."""
    ready = {name: s for name, s in variants.items() if s.probabilities is not None and s.predictions}
    if not ready:
        return []
    plt = _pyplot()
    (roc, roc_axes), (pr, pr_axes) = _panels(plt, len(classes)), _panels(plt, len(classes))
    for k, c in enumerate(classes):
        for name, scored in ready.items():
            row = clinical[name]["discrimination"]["per_class"][c]
            preds, target = _column(scored, k)
            if row["auroc"] is not None:
                fpr, tpr, _ = binary_roc(preds, target)
                (line,) = roc_axes[k].plot(fpr, tpr, label=f"{name} ({row['auroc']:.2f})")
                answers = clinical[name]["operating_points"]["generated_answers"]["per_class"][c]
                if answers["sensitivity"] is not None and answers["specificity"] is not None:
                    roc_axes[k].plot(1 - answers["specificity"], answers["sensitivity"], "x", color=line.get_color())
            if row["average_precision"] is not None:
                precision, recall, _ = binary_precision_recall_curve(preds, target)
                pr_axes[k].plot(recall, precision, drawstyle="steps-post",
                                label=f"{name} ({row['average_precision']:.2f})")
        prevalence = float(next(iter(ready.values())).truth[:, k].mean())
        roc_axes[k].plot([0, 1], [0, 1], ls="--", color="grey", lw=0.8)
        pr_axes[k].axhline(prevalence, ls="--", color="grey", lw=0.8)
        _style(roc_axes[k], c, "1 - specificity", "sensitivity", "AUROC")
        _style(pr_axes[k], c, "recall (sensitivity)", "precision (PPV)", "AP")
    roc.suptitle("ROC per class (x: the generated answers; dashed: chance)")
    pr.suptitle("Precision-recall per class (dashed: prevalence)")
    return [_save(plt, roc, out / f"roc{suffix}.png"), _save(plt, pr, out / f"precision_recall{suffix}.png")]


def _style(ax, title: str, xlabel: str, ylabel: str, metric: str) -> None:
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel, xlim=(0, 1), ylim=(0, 1.02))
    if ax.get_legend_handles_labels()[0]:
        ax.legend(title=metric, fontsize=7, title_fontsize=7)
    else:
        ax.text(0.5, 0.5, "not defined\n(one truth value)", ha="center", va="center", transform=ax.transAxes)


def _save(plt, fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_reliability(path: Path, calibration: dict, title: str) -> Path:
    """The pooled reliability diagram of one variant (`calibration`: its metrics.json ``calibration`` entry)."""
    plt = _pyplot()
    bins = calibration["reliability"]
    edges, count = np.array(bins["edges"]), np.array(bins["count"])
    have = np.flatnonzero(count)
    confidence = np.array([bins["confidence"][i] for i in have])
    frequency = np.array([bins["frequency"][i] for i in have])
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(4.8, 5.6), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    top.plot([0, 1], [0, 1], ls="--", color="grey", lw=0.8, label="perfect calibration")
    top.plot(confidence, frequency, "o-", label=f"pooled over classes (ECE {100 * calibration['pooled']:.1f}%)")
    for x, y, n in zip(confidence, frequency, count[have]):
        top.annotate(str(n), (x, y), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=7)
    top.set(ylabel="observed frequency", xlim=(0, 1), ylim=(0, 1.05), title=title)
    top.legend(fontsize=7, loc="upper left")
    bottom.bar(edges[:-1], count, width=np.diff(edges), align="edge", edgecolor="white")
    bottom.set(xlabel=f"predicted probability ({calibration['bins']} equal-width bins)", ylabel="count")
    return _save(plt, fig, path)
