"""All report-generation scores of one evaluation, plus clinical finding F1.

BLEU rewards wording, not diagnoses: clinical finding F1 compares the conditions named in the
diagnosis section of the generated report with the reference's, per condition and macro. Only
affirmed conditions count as findings; diagnoses that negate a condition or leave one uncertain are
counted apart.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchmetrics import MetricCollection, SumMetric
from torchmetrics.classification import MultilabelF1Score

from dentvlm.metrics.classification import mention_counts, multi_hot
from dentvlm.metrics.text import EmbeddingSimilarity, Meteor, RougeL, bleu_metrics, tokenization_note


class ReportScores(torch.nn.Module):
    """BLEU-1..4, METEOR, ROUGE-L, embedding similarity and (report task) clinical finding F1.

    Args:
        classes: Conditions for finding F1.
        embedding_models: sentence-transformers models whose similarities are averaged.
        language: "en" or "zh": how texts are tokenized (see `dentvlm.metrics.text`).
        findings: Compute clinical finding F1 (reports with a diagnosis section).
    """

    def __init__(self, classes: Sequence[str], embedding_models: Sequence[str], language: str = "en",
                 findings: bool = True):
        super().__init__()
        self.classes, self.embedding_models = list(classes), list(embedding_models)
        self.language, self.findings = language, findings
        # Built up front on every rank: a rank that sees no report must still join the state sync.
        self.text = MetricCollection({
            **bleu_metrics(language), "meteor": Meteor(language), "rouge_l": RougeL(language),
            "embedding_similarity": EmbeddingSimilarity(self.embedding_models),
        }, compute_groups=False)
        n = len(classes)
        self.finding_f1 = MetricCollection({
            "finding_macro_f1": MultilabelF1Score(num_labels=n, average="macro"),
            "finding_per_class_f1": MultilabelF1Score(num_labels=n, average=None),
        })
        self.unparseable = SumMetric()
        self.negated = SumMetric()
        self.uncertain = SumMetric()

    def update(self, generated: Sequence[str], references: Sequence[str],
               parsed: Sequence[list[str] | None] = (), truth: Sequence[list[str]] = (),
               negated: Sequence[list[str]] = (), uncertain: Sequence[list[str]] = ()) -> None:
        """One batch: texts, and for finding F1 the parsed diagnoses (`parse_prediction`), reference labels,
        and per diagnosis the conditions it negates and leaves uncertain."""
        if not references:
            return
        for name, metric in self.text.items():
            if name.startswith("bleu"):
                metric.update(list(generated), [[r] for r in references])
            else:
                metric.update(list(generated), list(references))
        if self.findings:
            device = self.unparseable.device
            preds = torch.tensor([multi_hot(p, self.classes) for p in parsed], device=device)
            target = torch.tensor([multi_hot(t, self.classes) for t in truth], device=device)
            self.finding_f1.update(preds, target)
            self.unparseable.update(torch.tensor(float(sum(p is None for p in parsed)), device=device))
            for metric, count in zip((self.negated, self.uncertain), mention_counts(negated, uncertain)):
                metric.update(torch.tensor(count, device=device))

    def compute(self) -> dict:
        out = {name: float(value) for name, value in self.text.compute().items()}
        out["embedding_models"] = self.embedding_models
        out["tokenization"] = tokenization_note(self.language)
        if self.findings:
            finding = self.finding_f1.compute()
            out["finding_macro_f1"] = float(finding["finding_macro_f1"])
            out["finding_per_class_f1"] = finding["finding_per_class_f1"].tolist()
            out["unparseable_diagnosis"] = int(self.unparseable.compute())
            out["negated_answers"] = int(self.negated.compute())
            out["uncertain_answers"] = int(self.uncertain.compute())
        return out

    def reset(self) -> None:
        self.text.reset()
        self.finding_f1.reset()
        for metric in (self.unparseable, self.negated, self.uncertain):
            metric.reset()
