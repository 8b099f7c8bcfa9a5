"""One optimizer step of the tiny model on fixed batches, recording the gradients it applies.

Used in-process (one device, with or without accumulation) and as a script in two processes
(``python -m tests.integration.grad_probe STRATEGY OUT``; Lightning's launcher starts rank 1),
so the tests can compare the gradient of the same samples split over micro-batches and ranks.
"""

from __future__ import annotations

import sys
from pathlib import Path

import lightning as L
import torch

from dentvlm.data.collate import Encoded, pad_batch
from dentvlm.data.datamodule import DentDataModule
from dentvlm.model.module import DentVLM

REPO = Path(__file__).resolve().parents[2]


def two_examples() -> list[Encoded]:
    """A short answer (classification: a few tokens) and a long one (a report: ~100 tokens)."""
    examples = []
    for task in ("classification", "report"):
        data = DentDataModule(shards=str(REPO / "shards" / "demo"), processor_path="tiny", num_workers=0, task=task,
                              max_images=2)
        data.setup()
        examples.append(next(iter(data.stream("train", task, training=True))))
    return examples


class FixedBatches(L.LightningDataModule):
    """Rank r trains on `per_rank[r]`, a list of micro-batches (each a list of examples)."""

    def __init__(self, per_rank: list[list[list[Encoded]]], pad_id: int):
        super().__init__()
        self.per_rank, self.pad_id = per_rank, pad_id

    def train_dataloader(self):
        rank = self.trainer.global_rank if self.trainer else 0
        batches = [pad_batch(micro, self.pad_id) for micro in self.per_rank[rank]]
        return torch.utils.data.DataLoader(batches, batch_size=None, collate_fn=lambda batch: batch)


class GradCapture(L.Callback):
    """Saves the gradients that reach the optimizer (after dentvlm's token scaling), as full tensors."""

    def __init__(self, out: Path):
        self.out = out

    def on_train_start(self, trainer, pl_module) -> None:
        def capture(optimizer, args, kwargs) -> None:
            grads = {}
            for name, param in pl_module.named_parameters():
                if param.grad is not None:
                    grad = param.grad
                    grads[name] = (grad.full_tensor() if hasattr(grad, "full_tensor") else grad).detach().cpu()
            if trainer.global_rank == 0:
                torch.save(grads, self.out)

        trainer.optimizers[0].register_step_post_hook(capture)  # grads as applied; the pre hook runs before the closure


def run_step(per_rank, out: Path, accumulate: int = 1, devices: int = 1, strategy="auto") -> None:
    L.seed_everything(0)
    module = DentVLM(model_path="tiny", lora_dropout=0.0, learning_rate=1e-3, warmup_ratio=0.0)
    pad_id = 0  # labels mask padding, so the pad id does not matter
    trainer = L.Trainer(accelerator="cpu", devices=devices, strategy=strategy, max_steps=1,
                        accumulate_grad_batches=accumulate, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                        num_sanity_val_steps=0, callbacks=[GradCapture(out)])
    trainer.fit(module, datamodule=FixedBatches(per_rank, pad_id))


def main() -> None:
    strategy_name, out = sys.argv[1], Path(sys.argv[2])
    short, long = two_examples()
    if strategy_name == "fsdp2":
        from lightning.pytorch.strategies import ModelParallelStrategy

        strategy = ModelParallelStrategy(save_distributed_checkpoint=False)
    else:
        strategy = "ddp"
    run_step([[[short]], [[long]]], out, devices=2, strategy=strategy)


if __name__ == "__main__":
    main()
