"""Silence the library output that says nothing to a dentvlm user: Lightning's tips and hardware lines,
known harmless deprecation warnings of the libraries dentvlm drives, transformers' weight-loading bars and
W&B's banner. They preceded the first training step (a dozen lines) and every one-line error. What dentvlm
needs the user to know it prints itself (the trainable parameters, the W&B sync command at the end)."""

from __future__ import annotations

import logging
import os
import warnings

# Lightning's informational lines, by the start of their message.
LIGHTNING_NOISE = ("💡 Tip", "GPU available", "TPU available", "HPU available", "Seed set to",
                   "Loading `train_dataloader` to estimate", "`Trainer(limit_", "`Trainer.fit` stopped",
                   "Restoring states from the checkpoint", "Loaded model weights from the checkpoint",
                   "Restored all states from the checkpoint")
# Warnings from inside the libraries about their own APIs, raised by calls dentvlm makes correctly.
WARNING_NOISE = (
    r".*is_gradient_checkpointing.* is deprecated",
    r".*isinstance\(treespec, LeafSpec\)",
    r"Your `IterableDataset` has `__len__` defined",  # dentvlm's streams give every worker its own part
    r"LightningCLI's args parameter is intended",
    r"It is recommended to use `self.log\('(val|test)/",  # torchmetrics results: synced already
)


class _DropNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith(LIGHTNING_NOISE)


def silence_library_noise() -> None:
    """Install the filters (idempotent); `DENTVLM_DEBUG=1` keeps everything."""
    if os.environ.get("DENTVLM_DEBUG", "") not in ("", "0", "false"):
        return
    import lightning.pytorch  # noqa: F401  (its import installs the handlers filtered here)

    for name in ("lightning.pytorch", "lightning.fabric"):  # their records all pass these loggers' handlers
        for handler in logging.getLogger(name).handlers:
            if not any(isinstance(f, _DropNoise) for f in handler.filters):
                handler.addFilter(_DropNoise())
    for pattern in WARNING_NOISE:
        warnings.filterwarnings("ignore", message=pattern)
    os.environ.setdefault("WANDB_SILENT", "true")  # the sync command is in dentvlm's own summary
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # "Loading weights: 100%" for a model loaded in a second
    except ImportError:
        pass


def quiet_wandb_loggers(loggers) -> None:
    """Lightning's WandbLogger passes ``anonymous=None``, which W&B now answers with a deprecation warning
    before its settings (and WANDB_SILENT) apply; an unset value means the same."""
    from lightning.pytorch.loggers import WandbLogger

    for logger in loggers:
        init = getattr(logger, "_wandb_init", None)
        if isinstance(logger, WandbLogger) and isinstance(init, dict) and init.get("anonymous") is None:
            init.pop("anonymous", None)
