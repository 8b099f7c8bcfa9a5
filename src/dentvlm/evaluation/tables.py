"""`PredictionTable`: sample predictions with their first image, and the confusion matrix, in W&B.

Only a `WandbLogger` gets tables and images; with other loggers (CSV) the results folder's
predictions.jsonl and PNGs carry the same information.
"""

from __future__ import annotations

import io

import lightning as L
import numpy as np
from lightning.pytorch.loggers import WandbLogger

from dentvlm.metrics.callbacks import ClassificationMetrics


class PredictionTable(L.Callback):
    """Log a table of the first `rows` predictions per task and the confusion matrix, each epoch.

    Args:
        rows: Predictions per task and epoch in the table.
    """

    def __init__(self, rows: int = 16):
        self.rows = rows
        self._rows: dict[str, list] = {}

    def _wandb(self, trainer: L.Trainer) -> WandbLogger | None:
        return next((lg for lg in trainer.loggers if isinstance(lg, WandbLogger)), None)

    def _collect(self, trainer, outputs) -> None:
        if self._wandb(trainer) is None or not trainer.is_global_zero or not isinstance(outputs, dict):
            return
        for p in outputs.get("predictions", []):
            rows = self._rows.setdefault(p.task, [])
            if len(rows) < self.rows:
                rows.append(p)

    def _publish(self, trainer, stage: str) -> None:
        logger = self._wandb(trainer)
        if logger is None or not trainer.is_global_zero:
            self._rows = {}
            return
        import wandb
        from PIL import Image

        for task, predictions in self._rows.items():
            data = [[p.key, wandb.Image(Image.open(io.BytesIO(p.thumbnail))) if p.thumbnail else None,
                     p.reference, p.generated, ", ".join(p.true_labels), ", ".join(p.parsed_labels or [])]
                    for p in predictions]
            logger.log_table(f"{stage}/{task}/predictions", columns=["key", "image", "reference", "generated",
                                                                     "true labels", "parsed labels"],
                             data=data, step=trainer.global_step)
        self._rows = {}
        for callback in trainer.callbacks:
            if isinstance(callback, ClassificationMetrics) and stage in callback.results:
                matrix = np.array(callback.results[stage]["confusion"])
                classes = list(trainer.datamodule.classes)
                if matrix.ndim == 2:  # single-label; rows: true class, columns: predicted (+ unparseable)
                    logger.log_table(f"{stage}/classification/confusion_matrix",
                                     columns=["true \\ predicted", *classes, "unparseable"],
                                     data=[[name, *row] for name, row in zip(classes, matrix.tolist())],
                                     step=trainer.global_step)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._collect(trainer, outputs)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._collect(trainer, outputs)

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        self._publish(trainer, "val")

    def on_test_epoch_end(self, trainer, pl_module) -> None:
        self._publish(trainer, "test")
