"""`dentvlm test` with baselines: after the model itself, the same test split is evaluated again as
each baseline, so one results folder compares them in one table."""

from __future__ import annotations

import lightning as L

from dentvlm.evaluation.results import ResultsWriter


def first_variant_name(ckpt_path: str | None) -> str:
    return "fine-tuned" if ckpt_path else "base"


def run_baselines(trainer: L.Trainer, model: L.LightningModule, datamodule, writer: ResultsWriter,
                  ckpt_path: str | None) -> None:
    """Evaluate `writer.baselines` after a test run; the model keeps the weights loaded by that run."""
    wanted = [b for b in writer.baselines if not (b == "base" and not ckpt_path)]  # already the first run
    if "base" in wanted and model.hparams.finetune != "lora":
        print("dentvlm test: skipping the 'base' baseline: it switches a LoRA adapter off, and this run is "
              "full fine-tuning; run `dentvlm test` without --ckpt_path for the base model")
        wanted.remove("base")
    few_shot = datamodule.few_shot
    try:
        for name in wanted:
            model.use_adapter = False
            datamodule.few_shot = writer.few_shot if name == "base_few_shot" else 0
            model.variant = name
            trainer.test(model, datamodule=datamodule, verbose=False)
    finally:
        model.use_adapter, datamodule.few_shot = True, few_shot
