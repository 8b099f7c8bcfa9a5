"""Predictions and result plots in W&B: look at the checkups, don't read numbers.

- `PredictionTable` (a callback): each validation epoch, a table of the first `rows` predictions per task.
- `log_test_variant` (called by the results writer, with every rank's predictions): per `dentvlm test`
  variant, a table of all its test predictions, the confusion matrix and per-class F1 plots as images.

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
        parsed = ", ".join(p.parsed_labels) if p.parsed_labels else ("unparseable" if p.parsed_labels is None else "none")
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
