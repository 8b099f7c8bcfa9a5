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

Variants already in the folder (e.g. an endpoint evaluated by an earlier `dentvlm test --endpoint.*`)
stay beside this run's when they were evaluated on the same shards, split, classes and inputs; a
variant evaluated again replaces its old entry.
"""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import torch

from dentvlm.evaluation.bootstrap import classification_intervals, report_intervals
from dentvlm.evaluation.report import confusion_counts, plot_confusion, plot_per_class_f1, write_report_md
from dentvlm.evaluation.tables import log_test_variant, wandb_logger
from dentvlm.metrics.callbacks import ClassificationMetrics, ReportMetrics
from dentvlm.predictions import Prediction

BASELINES = ("base", "base_few_shot")
# Settings under which variants of different runs are comparable in one table.
SAME_INPUTS = ("shards", "split", "classes", "multi_label", "modality", "max_images")


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
        keep_variants: Keep the variants already in `out_dir` that this run does not evaluate, when they
            were evaluated on the same shards, split, classes and inputs (false: start afresh).
    """

    def __init__(self, out_dir: str | None = None,
                 baselines: list[str] = list(BASELINES),  # noqa: B006 (a YAML default; copied below)
                 few_shot: int = 2, bootstrap: int = 1000, seed: int = 0, keep_variants: bool = True):
        bad = [b for b in baselines if b not in BASELINES]
        if bad:
            raise ValueError(f"results.baselines: unknown {bad}; choose from {BASELINES}")
        self.out_dir = Path(out_dir) if out_dir else None
        self.baselines, self.few_shot = list(baselines), few_shot
        self.bootstrap, self.seed, self.keep_variants = bootstrap, seed, keep_variants
        self.evaluated: list[str] = []  # the variants this run evaluated, in order
        self.results: dict = {}  # the metrics.json content last written
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
        details = getattr(pl_module, "variant_details", None)
        if callable(details):  # what was scored: a checkpoint and its base model, an endpoint's requests and cost
            entry["details"] = details()
        for callback in trainer.callbacks:
            if isinstance(callback, (ClassificationMetrics, ReportMetrics)) and "test" in callback.results:
                metrics = dict(callback.results["test"])
                mine = [p for p in predictions if p.task == callback.task]
                metrics["samples"] = len(mine)
                metrics["ci"] = self._intervals(callback, mine, datamodule)
                entry[callback.task] = metrics
        if not self.variants and self.keep_variants:
            self.variants = earlier_variants(self.out_dir, self.settings(datamodule))
        name = getattr(pl_module, "variant", None) or "model"
        self.variants[name] = entry
        self.evaluated = [*(n for n in self.evaluated if n != name), name]
        self.write(datamodule)
        logger = wandb_logger(trainer)
        if logger is not None:
            plots = {f"test/{name}/classification/confusion_matrix": self.out_dir / f"confusion_{name}.png",
                     "test/classification/per_class_f1": self.out_dir / "per_class_f1.png"}
            log_test_variant(logger, name, predictions, plots, trainer.global_step)

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

    def settings(self, datamodule) -> dict:
        hp = datamodule.hparams
        return {"shards": str(hp.shards), "split": hp.test_split, "classes": list(datamodule.classes),
                "multi_label": hp.multi_label, "modality": hp.modality, "max_images": hp.max_images,
                "tasks": list(datamodule.eval_tasks), "bootstrap": self.bootstrap, "few_shot": self.few_shot}

    def write(self, datamodule) -> None:
        out = self.out_dir
        out.mkdir(parents=True, exist_ok=True)
        hp = datamodule.hparams
        classes = list(datamodule.classes)
        settings = self.settings(datamodule)
        tasks = [t for entry in self.variants.values() for t in ("classification", "report") if t in entry]
        settings["tasks"] = list(dict.fromkeys(settings["tasks"] + tasks))  # kept variants may hold others
        results = {
            "settings": settings,
            "variants": {name: {k: v for k, v in entry.items() if k != "predictions"}
                         for name, entry in self.variants.items()},
        }
        (out / "metrics.json").write_text(json.dumps(results, indent=2) + "\n")
        self.results = results
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


    def summary(self) -> str:
        """The terminal tables of the variants this run evaluated (see `dentvlm.evaluation.summary`)."""
        from dentvlm.evaluation.summary import terminal_summary

        return terminal_summary(self.results, self.evaluated, self.out_dir) if self.results else ""


def earlier_variants(out_dir: Path, settings: dict) -> dict[str, dict]:
    """The variants of an earlier run in `out_dir` (metrics and predictions), if comparable with `settings`."""
    path = out_dir / "metrics.json"
    try:
        earlier = json.loads(path.read_text(encoding="utf-8"))
        rows = [json.loads(line) for line in (out_dir / "predictions.jsonl").read_text(encoding="utf-8").splitlines()
                if line.strip()]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}  # nothing readable to keep: this run writes the folder afresh
    if not isinstance(earlier, dict) or not isinstance(earlier.get("variants"), dict):
        return {}
    old = earlier.get("settings", {})
    differs = [key for key in SAME_INPUTS if _comparable(key, old.get(key)) != _comparable(key, settings[key])]
    if differs:
        print(f"dentvlm test: {out_dir} held results for other {', '.join(differs)}; they are replaced")
        return {}
    fields = set(Prediction.__dataclass_fields__) - {"thumbnail"}
    variants = {name: dict(entry) for name, entry in earlier["variants"].items() if isinstance(entry, dict)}
    for entry in variants.values():
        entry["predictions"] = []
    for row in rows:
        if isinstance(row, dict) and row.get("variant") in variants:
            entry = variants[row["variant"]]
            entry["predictions"].append(Prediction(**{k: v for k, v in row.items() if k in fields}))
    return variants


def _comparable(key: str, value):
    return str(Path(value).resolve()) if key == "shards" and value is not None else value
