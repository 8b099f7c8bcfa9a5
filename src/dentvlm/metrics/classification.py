"""Classification metrics on generated answers, as torchmetrics (state syncs across processes).

Answers are parsed into labels with the shared `LabelParser`: only affirmed conditions are labels.
An unparseable answer counts as wrong (single-label: an extra "unparseable" class that no reference
has; multi-label: the empty set) and is counted separately, as are answers that negate a condition
or leave one uncertain.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchmetrics import MetricCollection, SumMetric
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
    MulticlassPrecision,
    MulticlassRecall,
    MultilabelConfusionMatrix,
    MultilabelExactMatch,
    MultilabelF1Score,
)

from dentvlm.data.tasks import parse_report
from dentvlm.labels import LabelParser
from dentvlm.predictions import Prediction


def parse_prediction(prediction: Prediction, parser: LabelParser) -> list[str] | None:
    """Affirmed labels of a generated answer (report task: of its diagnosis section); sets and returns them.

    Also records the conditions the answer negates or leaves uncertain, which are not labels but are
    counted (an answer of "no caries" must not score as caries).
    """
    text = prediction.generated
    if prediction.task == "report":
        text = parse_report(text).get("diagnosis", "")
    reading = parser.read(text)
    prediction.parsed_labels = parser.labels_of(reading, text) if text.strip() else None
    prediction.negated_labels, prediction.uncertain_labels = list(reading.negated), list(reading.uncertain)
    return prediction.parsed_labels


def mention_counts(negated: Sequence[list[str]], uncertain: Sequence[list[str]]) -> tuple[float, float]:
    """(answers with a negated mention, answers with an uncertain mention)."""
    return float(sum(bool(n) for n in negated)), float(sum(bool(u) for u in uncertain))


def multi_hot(labels: Sequence[str] | None, classes: Sequence[str]) -> list[int]:
    return [int(c in (labels or ())) for c in classes]


class ClassificationScores(torch.nn.Module):
    """Accuracy, precision/recall/F1 (macro, weighted, per class) and confusion matrix.

    Args:
        classes: The label vocabulary.
        multi_label: Multi-label metrics (subset accuracy, micro/macro F1) instead of single-label.
    """

    def __init__(self, classes: Sequence[str], multi_label: bool):
        super().__init__()
        self.classes, self.multi_label = list(classes), multi_label
        n = len(classes)
        if multi_label:
            self.metrics = MetricCollection({
                # one extra column, set only for unparseable answers: they never match, even an empty truth
                "subset_accuracy": MultilabelExactMatch(num_labels=n + 1),
                "micro_f1": MultilabelF1Score(num_labels=n, average="micro"),
                "macro_f1": MultilabelF1Score(num_labels=n, average="macro"),
                "per_class_f1": MultilabelF1Score(num_labels=n, average=None),
                "confusion": MultilabelConfusionMatrix(num_labels=n),
            })
        else:  # class n is "unparseable or not exactly one label": never a reference, always wrong
            self.metrics = MetricCollection({
                "accuracy": MulticlassAccuracy(num_classes=n + 1, average="micro"),
                "per_class_precision": MulticlassPrecision(num_classes=n + 1, average=None),
                "per_class_recall": MulticlassRecall(num_classes=n + 1, average=None),
                "per_class_f1": MulticlassF1Score(num_classes=n + 1, average=None),
                "confusion": MulticlassConfusionMatrix(num_classes=n + 1),
            })
        self.unparseable = SumMetric()
        self.negated = SumMetric()
        self.uncertain = SumMetric()
        self.count = SumMetric()

    def update(self, parsed: Sequence[list[str] | None], truth: Sequence[list[str]],
               negated: Sequence[list[str]] = (), uncertain: Sequence[list[str]] = ()) -> None:
        """One batch: parsed answers (`parse_prediction`), reference labels, and per answer the conditions
        it negates and leaves uncertain (`Prediction.negated_labels`, `.uncertain_labels`)."""
        if not truth:
            return
        device = self.unparseable.device
        if self.multi_label:
            preds = torch.tensor([multi_hot(p, self.classes) for p in parsed], device=device)
            target = torch.tensor([multi_hot(t, self.classes) for t in truth], device=device)
            unparseable = torch.tensor([[int(p is None)] for p in parsed], device=device)
            self.metrics["subset_accuracy"].update(torch.cat([preds, unparseable], 1),
                                                   torch.cat([target, torch.zeros_like(unparseable)], 1))
            for name, metric in self.metrics.items():
                if name != "subset_accuracy":
                    metric.update(preds, target)
        else:
            preds = torch.tensor([self.classes.index(p[0]) if p and len(p) == 1 else len(self.classes)
                                  for p in parsed], device=device)
            target = torch.tensor([self.classes.index(t[0]) for t in truth], device=device)
            self.metrics.update(preds, target)
        self.unparseable.update(torch.tensor(float(sum(p is None for p in parsed)), device=device))
        for metric, count in zip((self.negated, self.uncertain), mention_counts(negated, uncertain)):
            metric.update(torch.tensor(count, device=device))
        self.count.update(torch.tensor(float(len(truth)), device=device))

    def compute(self) -> dict:
        """Scalars (floats) and per-class lists; per-class entries follow `classes`."""
        raw = self.metrics.compute()
        n = len(self.classes)
        out = {"samples": int(self.count.compute()), "unparseable": int(self.unparseable.compute()),
               "negated_answers": int(self.negated.compute()), "uncertain_answers": int(self.uncertain.compute())}
        if self.multi_label:
            out.update(subset_accuracy=float(raw["subset_accuracy"]), micro_f1=float(raw["micro_f1"]),
                       macro_f1=float(raw["macro_f1"]), per_class_f1=raw["per_class_f1"].tolist(),
                       confusion=raw["confusion"].tolist())
            return out
        support = raw["confusion"][:n].sum(1).double()
        weights = support / support.sum().clamp(min=1)
        out["accuracy"] = float(raw["accuracy"])
        for name in ("precision", "recall", "f1"):
            per_class = raw[f"per_class_{name}"][:n].double()
            out[f"macro_{name}"] = float(per_class.mean())
            out[f"weighted_{name}"] = float((per_class * weights).sum())
            out[f"per_class_{name}"] = per_class.tolist()
        out["confusion"] = raw["confusion"].tolist()  # rows: truth, columns: prediction (+ unparseable)
        return out

    def reset(self) -> None:
        self.metrics.reset()
        for metric in (self.unparseable, self.negated, self.uncertain, self.count):
            metric.reset()
