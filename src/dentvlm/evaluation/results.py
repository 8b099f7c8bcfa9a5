"""`ResultsWriter`: the results folder of `dentvlm test`.

For every evaluated variant (the fine-tuned model and the baselines, see `dentvlm.evaluation.runner`)
it keeps the test predictions (gathered from all ranks) and the metric callbacks' results, and after
each variant rewrites:

- ``metrics.json``: settings, and per variant and task every metric, with 95% bootstrap intervals
  for the headline ones;
- ``predictions.jsonl``: pseudonymous key, variant, task, prompt, reference, generated text, parsed
  and true labels (no patient identifier: records never hold one);
- ``report.md``: tables shaped like the COde paper's;
- ``confusion_<variant>.png`` and ``per_class_f1.png``.
"""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import torch

from dentvlm.evaluation.bootstrap import classification_intervals, report_intervals
from dentvlm.evaluation.report import confusion_counts, plot_confusion, plot_per_class_f1, write_report_md
from dentvlm.metrics.callbacks import ClassificationMetrics, ReportMetrics
from dentvlm.predictions import Prediction

BASELINES = ("base", "base_few_shot")


class ResultsWriter(L.Callback):
    """Writes the results folder after each test run.

    Args:
        out_dir: The results folder (created; files in it are replaced; default: ``results`` in the
            run folder, trainer.default_root_dir).
        baselines: Extra variants `dentvlm test` evaluates after a fine-tuned checkpoint, in the same
            tables: "base" (the adapter switched off, zero-shot) and "base_few_shot" (the base model
            with `few_shot` training examples in the prompt).
        few_shot: Training examples shown in the prompt for "base_few_shot".
        bootstrap: Bootstrap resamples for the 95% intervals (0: none).
        seed: Seed of the bootstrap.
    """

    def __init__(self, out_dir: str | None = None,
                 baselines: list[str] = list(BASELINES),  # noqa: B006 (a YAML default; copied below)
                 few_shot: int = 2, bootstrap: int = 1000, seed: int = 0):
        bad = [b for b in baselines if b not in BASELINES]
        if bad:
            raise ValueError(f"results.baselines: unknown {bad}; choose from {BASELINES}")
        self.out_dir = Path(out_dir) if out_dir else None
        self.baselines, self.few_shot = list(baselines), few_shot
        self.bootstrap, self.seed = bootstrap, seed
        self.variant = "model"
        self.variants: dict[str, dict] = {}
        self._predictions: list[Prediction] = []

    def on_test_start(self, trainer, pl_module) -> None:
        self._predictions = []
        if self.out_dir is None:
            self.out_dir = Path(trainer.default_root_dir) / "results"

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if isinstance(outputs, dict):
            self._predictions.extend(outputs.get("predictions", []))

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        predictions = self._gather(trainer)
        if not trainer.is_global_zero:
            return
        datamodule = trainer.datamodule
        entry: dict = {"predictions": predictions}
        for callback in trainer.callbacks:
            if isinstance(callback, (ClassificationMetrics, ReportMetrics)) and "test" in callback.results:
                metrics = dict(callback.results["test"])
                mine = [p for p in predictions if p.task == callback.task]
                metrics["samples"] = len(mine)
                metrics["ci"] = self._intervals(callback, mine, datamodule)
                entry[callback.task] = metrics
        self.variants[self.variant] = entry
        self.write(datamodule)

    def _gather(self, trainer: L.Trainer) -> list[Prediction]:
        if trainer.world_size == 1 or not torch.distributed.is_initialized():
            return list(self._predictions)
        gathered: list = [None] * trainer.world_size
        torch.distributed.all_gather_object(gathered, self._predictions)
        return [p for rank in gathered for p in rank]

    def _intervals(self, callback, predictions: list[Prediction], datamodule) -> dict:
        if not self.bootstrap or not predictions:
            return {}
        if isinstance(callback, ClassificationMetrics):
            intervals = classification_intervals(predictions, datamodule.classes, datamodule.hparams.multi_label,
                                                 self.bootstrap, self.seed)
        else:
            intervals = report_intervals(predictions, callback.scores["test"], datamodule.classes,
                                         self.bootstrap, self.seed)
        return {name: list(bounds) for name, bounds in intervals.items()}

    def write(self, datamodule) -> None:
        out = self.out_dir
        out.mkdir(parents=True, exist_ok=True)
        hp = datamodule.hparams
        classes = list(datamodule.classes)
        results = {
            "settings": {"shards": str(hp.shards), "split": hp.test_split, "classes": classes,
                         "multi_label": hp.multi_label, "modality": hp.modality, "max_images": hp.max_images,
                         "tasks": list(datamodule.eval_tasks), "bootstrap": self.bootstrap, "few_shot": self.few_shot},
            "variants": {name: {k: v for k, v in entry.items() if k != "predictions"}
                         for name, entry in self.variants.items()},
        }
        (out / "metrics.json").write_text(json.dumps(results, indent=2) + "\n")
        with (out / "predictions.jsonl").open("w", encoding="utf-8") as handle:
            for name, entry in self.variants.items():
                for prediction in entry["predictions"]:
                    handle.write(json.dumps({"variant": name, **prediction.to_dict()}, ensure_ascii=False) + "\n")
        write_report_md(out / "report.md", results)
        per_class = {}
        for name, entry in self.variants.items():
            if "classification" in entry:
                rows = [p.to_dict() for p in entry["predictions"] if p.task == "classification"]
                matrix = confusion_counts(rows, classes, hp.multi_label)
                plot_confusion(out / f"confusion_{name}.png", matrix, classes, f"classification: {name}")
                per_class[name] = entry["classification"]["per_class_f1"]
        if per_class:
            plot_per_class_f1(out / "per_class_f1.png", per_class, classes, "classification: per-class F1")
