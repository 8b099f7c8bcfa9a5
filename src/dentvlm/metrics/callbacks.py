"""Metric callbacks: they read the `Prediction`s that validation/test steps return, update torchmetrics
state each batch, and log ``<stage>/<task>/<metric>`` at epoch end (W&B, CSV, progress bar).

The latest results per stage stay in `results` for the results folder and the W&B plots.
"""

from __future__ import annotations

from collections.abc import Sequence

import lightning as L
import torch

from dentvlm.labels import LabelParser
from dentvlm.metrics.classification import ClassificationScores, parse_prediction
from dentvlm.metrics.report import ReportScores
from dentvlm.metrics.text import DEFAULT_EMBEDDING_MODEL, TOKENIZATIONS
from dentvlm.predictions import Prediction

STAGES = ("val", "test")


def metric_name(stage: str, task: str, name: str, variant: str | None = None) -> str:
    """``<stage>/<task>/<name>``; in a test, ``test/<variant>/<task>/<name>``: `dentvlm test` evaluates the
    fine-tuned model, the baselines and endpoints in one run, and each must keep its own numbers in W&B's
    summary and the CSV (under one name, the last variant logged would stand for all)."""
    return "/".join([stage, *([variant] if stage == "test" and variant else []), task, name])


class TaskMetrics(L.Callback):
    """Shared plumbing: per-stage scores, batch updates from step outputs, epoch-end logging."""

    task = ""

    def __init__(self):
        self.scores: dict[str, torch.nn.Module] = {}
        self.results: dict[str, dict] = {}
        self.parser: LabelParser | None = None

    def build(self, trainer: L.Trainer) -> torch.nn.Module:
        raise NotImplementedError

    def update(self, scores: torch.nn.Module, predictions: list[Prediction]) -> None:
        raise NotImplementedError

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        datamodule = trainer.datamodule
        if self.task not in getattr(datamodule, "eval_tasks", ()):
            return
        self.parser = LabelParser(datamodule.classes)
        for name in STAGES:
            if name not in self.scores:
                self.scores[name] = self.build(trainer).to(pl_module.device)

    def _batch_end(self, stage: str, outputs) -> None:
        if stage not in self.scores or not isinstance(outputs, dict):
            return
        # in a test, the validation checkups scored to choose thresholds are no test answers
        predictions = [p for p in outputs.get("predictions", []) if p.task == self.task
                       and not (stage == "test" and p.split == "val")]
        for prediction in predictions:
            parse_prediction(prediction, self.parser)
        self.update(self.scores[stage], predictions)

    def _epoch_end(self, stage: str, pl_module: L.LightningModule) -> None:
        if stage not in self.scores:
            return
        results = self.scores[stage].compute()  # synced over processes by torchmetrics
        self.scores[stage].reset()
        self.results[stage] = results
        variant = getattr(pl_module, "variant", None)
        for name, value in results.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                pl_module.log(metric_name(stage, self.task, name, variant), float(value), sync_dist=False,
                              rank_zero_only=False)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._batch_end("val", outputs)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._batch_end("test", outputs)

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        self._epoch_end("val", pl_module)

    def on_test_epoch_end(self, trainer, pl_module) -> None:
        self._epoch_end("test", pl_module)


class ClassificationMetrics(TaskMetrics):
    """Accuracy, macro/weighted precision/recall/F1, per-class F1 and confusion matrix (single-label);
    subset accuracy, micro/macro and per-class F1 (multi-label), on the generated answers."""

    task = "classification"

    def build(self, trainer: L.Trainer) -> ClassificationScores:
        return ClassificationScores(trainer.datamodule.classes, trainer.datamodule.hparams.multi_label)

    def update(self, scores: ClassificationScores, predictions: list[Prediction]) -> None:
        scores.update([p.parsed_labels for p in predictions], [p.true_labels for p in predictions],
                      [p.negated_labels for p in predictions], [p.uncertain_labels for p in predictions])


class ReportMetrics(TaskMetrics):
    """BLEU-1..4, METEOR, ROUGE-L, embedding similarity and clinical finding F1 of generated reports.

    Args:
        embedding_models: sentence-transformers models (local folders, or the packaged default
            "all-MiniLM-L6-v2"); the similarity is averaged over them.
        tokenization: "en" (word level), "zh" (per character), or "auto" (from the eval split's
            first reference).
    """

    task = "report"

    def __init__(self, embedding_models: Sequence[str] = (DEFAULT_EMBEDDING_MODEL,), tokenization: str = "auto"):
        super().__init__()
        if tokenization not in TOKENIZATIONS:
            raise ValueError(f"report_metrics.tokenization must be one of {TOKENIZATIONS}, got {tokenization!r}")
        self.embedding_models, self.tokenization = list(embedding_models), tokenization

    def build(self, trainer: L.Trainer) -> ReportScores:
        datamodule = trainer.datamodule
        return ReportScores(datamodule.classes, self.embedding_models, datamodule.report_language(self.tokenization))

    def update(self, scores: ReportScores, predictions: list[Prediction]) -> None:
        scores.update([p.generated for p in predictions], [p.reference for p in predictions],
                      [p.parsed_labels for p in predictions], [p.true_labels for p in predictions],
                      [p.negated_labels for p in predictions], [p.uncertain_labels for p in predictions])
