"""`StepProbe`: what one run's steps cost, written as JSON for `benchmarks/gpu_check.py`.

Per training micro-batch: its end time, rows and tokens (padded, real, image); per test batch: its end
time and the checkups it answered; CUDA peak memory (allocated and reserved). The times need one device
sync per batch (the figure is the step's wall time): a probe for a benchmark run, not for training runs.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import lightning as L
import torch


class StepProbe(L.Callback):
    """Record step times, tokens and peak memory to `out` (JSON, rewritten after every batch so a run cut
    short still leaves its figures).

    Args:
        out: The JSON file to write; ``{stage}`` in it becomes fit, test, ... (one file per command).
    """

    def __init__(self, out: str):
        self.out = out
        self.train_times: list[float] = []
        self.test_times: list[float] = []
        self.train_batches: list[list[int]] = []  # per micro-batch: rows, padded, real and image tokens
        self.test_rows = 0
        self._pending: torch.Tensor | None = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        ids = batch["input_ids"]
        image_token = getattr(pl_module.network.config, "image_token_id", -1)
        real = batch["attention_mask"].sum() if "attention_mask" in batch else ids.new_tensor(ids.numel())
        rows = (~batch["is_padding"]).sum().to(ids.device)
        self._pending = torch.stack([rows, ids.new_tensor(ids.numel()), real, (ids == image_token).sum()])

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._sync()
        self.train_times.append(time.perf_counter())
        self.train_batches.append(self._pending.tolist())  # synced above: no extra wait
        self._write(trainer, "training")

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._sync()
        self.test_times.append(time.perf_counter())
        self.test_rows += len(outputs.get("predictions", [])) if isinstance(outputs, dict) else 0
        self._write(trainer, "testing")

    def on_train_end(self, trainer, pl_module) -> None:
        self._write(trainer, "trained")

    def on_exception(self, trainer, pl_module, exception) -> None:
        self._write(trainer, f"failed: {type(exception).__name__}: {exception}"[:300])

    @staticmethod
    def _sync() -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()

    def _write(self, trainer, status: str) -> None:
        if not trainer.is_global_zero:
            return
        record = {"status": status, "train_times": self.train_times, "train_batches": self.train_batches,
                  "test_times": self.test_times, "test_rows": self.test_rows, "global_step": trainer.global_step,
                  "accumulate": trainer.accumulate_grad_batches}
        if torch.cuda.is_available():
            record.update(max_allocated_gib=torch.cuda.max_memory_allocated() / 2**30,
                          max_reserved_gib=torch.cuda.max_memory_reserved() / 2**30,
                          device=torch.cuda.get_device_name())
        path = Path(self.out.format(stage=trainer.state.fn.value if trainer.state.fn else "run"))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record))
