"""Predictions and result plots in W&B: look at the checkups, don't read numbers.

- `PredictionTable` (a callback): each validation epoch, a table of the first `rows` predictions per task.
- `log_test_variant` (called by the results writer, with every rank's predictions): per `dentvlm test`
  variant, a table of all its test predictions, the confusion matrix and per-class F1 plots as images.
- `log_clinical` (called by the results writer): per variant its clinical metrics (see
  `dentvlm.evaluation.clinical`) as a class table and a subgroup table, and the macro AUROC, AP and pooled
  calibration error as numbers (W&B's run summary).

Each row shows the checkup's images (a thumbnail strip), the prompt, the reference, the generated answer,
the parsed, negated, uncertain and true labels, and whether the answer is right. Only a `WandbLogger`
gets tables and images; with other loggers (CSV) the results folder's predictions.jsonl and PNGs carry
the same information.
"""

from __future__ import annotations

import io
from pathlib import Path

import lightning as L
from lightning.pytorch.loggers import WandbLogger

from dentvlm.evaluation.operating_points import RATES
from dentvlm.predictions import Prediction

COLUMNS = ["key", "images", "prompt", "reference", "generated", "true labels", "parsed labels", "negated",
           "uncertain", "correct"]


def wandb_logger(trainer: L.Trainer) -> WandbLogger | None:
    return next((lg for lg in trainer.loggers if isinstance(lg, WandbLogger)), None)


def prediction_rows(predictions: list[Prediction]) -> list[list]:
    """One table row per prediction (`COLUMNS`)."""
    import wandb
    from PIL import Image

    rows = []
    for p in predictions:
        images = wandb.Image(Image.open(io.BytesIO(p.thumbnail))) if p.thumbnail else None
        parsed = ", ".join(p.parsed_labels) if p.parsed_labels else "unparseable" if p.parsed_labels is None else "none"
        correct = p.parsed_labels is not None and set(p.parsed_labels) == set(p.true_labels)
        rows.append([p.key, images, p.prompt, p.reference, p.generated, ", ".join(p.true_labels) or "none", parsed,
                     ", ".join(p.negated_labels), ", ".join(p.uncertain_labels), correct])
    return rows


def log_test_variant(logger: WandbLogger, variant: str, predictions: list[Prediction], plots: dict[str, Path],
                     step: int) -> None:
    """All test predictions of `variant` per task under ``test/<variant>/<task>/predictions``, and result
    plots (PNG files) under their keys."""
    import wandb

    for task in dict.fromkeys(p.task for p in predictions):
        mine = [p for p in predictions if p.task == task]
        logger.log_table(f"test/{variant}/{task}/predictions", columns=COLUMNS, data=prediction_rows(mine), step=step)
    images = {key: wandb.Image(str(path)) for key, path in plots.items() if path.is_file()}
    if images:
        logger.log_metrics(images, step=step)


POINTS = ("generated_answers", "youden", "target_sensitivity")
CLINICAL_COLUMNS = ["class", "AUROC", "AUROC low", "AUROC high", "AP", "AP low", "AP high"] + [
    f"{point} {name}" for point in POINTS for name in (() if point == "generated_answers" else ("threshold",)) + RATES]
SUBGROUP_COLUMNS = ["group", "value", "n", "scored", "accuracy", "accuracy low", "accuracy high", "macro F1",
                    "macro F1 low", "macro F1 high", "macro AUROC", "macro AUROC low", "macro AUROC high"]


def _with_interval(row: dict, key: str) -> list:
    """[value, low, high]; None where not defined or not available (W&B shows null, never a made-up 0)."""
    bounds = row.get("ci", {}).get(key) or (None, None)
    return [row.get(key), *bounds]


def clinical_rows(clinical: dict, classes: list[str]) -> list[list]:
    """One row per class and a "macro" row (`CLINICAL_COLUMNS`)."""
    discrimination, points = clinical.get("discrimination", {}), clinical.get("operating_points", {})
    rows = []
    for c in [*classes, None]:
        found = discrimination.get("macro" if c is None else "per_class", {})
        values = found if c is None else found.get(c, {})
        row = [c or "macro", *_with_interval(values, "auroc"), *_with_interval(values, "average_precision")]
        for point in POINTS:
            found = points.get(point, {})
            values = found.get("macro", {}) if c is None else found.get("per_class", {}).get(c, {})
            row += ([] if point == "generated_answers" else [values.get("threshold")]) + [values.get(r) for r in RATES]
        rows.append(row)
    return rows


def subgroup_rows(subgroups: dict) -> list[list]:
    """One row per value of each group (`SUBGROUP_COLUMNS`); groups too small to score have only their count."""
    rows = []
    for kind, values in subgroups.get("groups", {}).items():
        for value, row in values.items():
            accuracy = "subset_accuracy" if "subset_accuracy" in row else "accuracy"
            scores = [x for key in (accuracy, "macro_f1", "macro_auroc") for x in _with_interval(row, key)]
            rows.append([kind, value, row["n"], "not_scored" not in row, *scores])
    return rows


def log_clinical(logger: WandbLogger, variant: str, clinical: dict, classes: list[str], step: int) -> None:
    """`variant`'s clinical metrics under ``test/<variant>/classification/``: tables ``clinical`` and
    ``subgroups``, and the numbers ``macro_auroc``, ``macro_average_precision``, ``ece_pooled`` when defined."""
    prefix = f"test/{variant}/classification"
    logger.log_table(f"{prefix}/clinical", columns=CLINICAL_COLUMNS, data=clinical_rows(clinical, classes), step=step)
    logger.log_table(f"{prefix}/subgroups", columns=SUBGROUP_COLUMNS, data=subgroup_rows(clinical.get("subgroups", {})),
                     step=step)
    macro = clinical.get("discrimination", {}).get("macro", {})
    numbers = {f"{prefix}/macro_auroc": macro.get("auroc"),
               f"{prefix}/macro_average_precision": macro.get("average_precision"),
               f"{prefix}/ece_pooled": clinical.get("calibration", {}).get("pooled")}
    numbers = {key: value for key, value in numbers.items() if value is not None}
    if numbers:
        logger.log_metrics(numbers, step=step)


class PredictionTable(L.Callback):
    """A W&B table of the first `rows` validation predictions per task, each epoch.

    Args:
        rows: Predictions per task and epoch in the table.
    """

    def __init__(self, rows: int = 16):
        self.rows = rows
        self._rows: dict[str, list] = {}

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if wandb_logger(trainer) is None or not trainer.is_global_zero or not isinstance(outputs, dict):
            return
        for p in outputs.get("predictions", []):
            rows = self._rows.setdefault(p.task, [])
            if len(rows) < self.rows:
                rows.append(p)

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        logger = wandb_logger(trainer)
        if logger is not None and trainer.is_global_zero:
            for task, predictions in self._rows.items():
                logger.log_table(f"val/{task}/predictions", columns=COLUMNS, data=prediction_rows(predictions),
                                 step=trainer.global_step)
        self._rows = {}
