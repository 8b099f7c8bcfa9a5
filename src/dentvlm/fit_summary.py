"""What `dentvlm fit` prints when it ends: the best epoch and its validation numbers, the best and last
checkpoints, where the logs are (and how to upload an offline W&B run), and the command that evaluates it."""

from __future__ import annotations

import math
import time
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, WandbLogger

from dentvlm.progress import clock


class FitSummary(L.Callback):
    """Keeps each epoch's validation numbers and prints the end-of-fit summary (rank 0)."""

    def __init__(self):
        self.epochs: dict[int, dict[str, float]] = {}
        self.started = time.monotonic()

    def on_fit_start(self, trainer, pl_module) -> None:
        self.started, self.epochs = time.monotonic(), {}

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        self.epochs[trainer.current_epoch + 1] = {k: float(v) for k, v in trainer.callback_metrics.items()
                                                  if k.startswith("val/") and getattr(v, "numel", lambda: 1)() == 1}

    def on_fit_end(self, trainer, pl_module) -> None:
        if trainer.is_global_zero and not trainer.interrupted:
            print(self.summary(trainer), flush=True)

    def summary(self, trainer) -> str:
        lines = [f"dentvlm fit: done, {trainer.current_epoch} epochs ({trainer.global_step} optimizer steps) in "
                 f"{clock(time.monotonic() - self.started)}"]
        checkpoint = next((cb for cb in trainer.checkpoint_callbacks if isinstance(cb, ModelCheckpoint)), None)
        best = self._best_epoch(checkpoint)
        if best is not None:
            numbers = ", ".join(f"{k} {v:.4g}" for k, v in sorted(self.epochs[best].items()) if _headline(k))
            lines.append(f"  best epoch {best}: {numbers}")
        if checkpoint is not None and checkpoint.best_model_path:
            lines.append(f"  best checkpoint: {checkpoint.best_model_path}")
        if checkpoint is not None and checkpoint.last_model_path:
            lines.append(f"  last checkpoint: {checkpoint.last_model_path}")
        lines += log_lines(trainer)
        lines.append(f"  results: `dentvlm test --config <this config> --ckpt_path last` writes "
                     f"{Path(trainer.default_root_dir) / 'results'}")
        return "\n".join(lines)

    def _best_epoch(self, checkpoint: ModelCheckpoint | None) -> int | None:
        if not self.epochs:
            return None
        monitor = checkpoint.monitor if checkpoint is not None else None
        scored = {e: m[monitor] for e, m in self.epochs.items() if monitor and not math.isnan(m.get(monitor, math.nan))}
        if not scored:
            return max(self.epochs)
        pick = min if checkpoint.mode == "min" else max
        return pick(scored, key=scored.get)


def _headline(key: str) -> bool:
    return key.endswith(("/loss", "/subset_accuracy", "/accuracy", "/macro_f1", "/embedding_similarity",
                         "/finding_macro_f1"))


def log_lines(trainer) -> list[str]:
    """Where this command's loggers wrote (`dentvlm test` has logs of its own beside fit's)."""
    lines = []
    for logger in trainer.loggers:
        if isinstance(logger, CSVLogger) and (Path(logger.log_dir) / "metrics.csv").is_file():
            lines.append(f"  metrics: {Path(logger.log_dir) / 'metrics.csv'}")
        elif isinstance(logger, WandbLogger) and getattr(logger, "_experiment", None) is not None:
            run_dir = Path(logger.experiment.dir).parent
            offline = run_dir.name.startswith("offline-run-")
            upload = f" (offline; upload with `wandb sync {run_dir}`)" if offline else ""
            lines.append(f"  W&B run: {run_dir}{upload}")
    return lines
