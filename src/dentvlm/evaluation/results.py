"""`ResultsWriter`: the results folder of `dentvlm test`.

For every evaluated variant (the fine-tuned model and the baselines, see `dentvlm.evaluation.runner`)
it keeps the predictions (gathered from all ranks: the test split's, and the validation checkups scored
only to choose thresholds, marked ``split: val``) and the metric callbacks' results, and after each
variant rewrites:

- ``metrics.json``: settings, and per variant and task every metric, with 95% bootstrap intervals
  for the headline ones, and per variant a ``clinical`` entry (`dentvlm.evaluation.clinical`: AUROC,
  AP, operating points, calibration, subgroups);
- ``predictions.jsonl``: pseudonymous key, variant, task, split, prompt, reference, generated text,
  parsed and true labels, class probabilities and subgroups (no patient identifier: records never
  hold one), enough to recompute every metric;
- ``report.md``: tables shaped like the COde paper's, and the clinical tables;
- ``confusion_<variant>.png``, ``per_class_f1.png``, ``roc.png``, ``precision_recall.png`` (every
  variant), ``roc_<variant>.png``, ``precision_recall_<variant>.png`` and ``reliability_<variant>.png``.

Validation-split predictions enter no test metric: only the clinical thresholds are chosen on them.

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
from dentvlm.evaluation.clinical import ClinicalSettings, clinical_metrics
from dentvlm.evaluation.clinical_data import scored
from dentvlm.evaluation.clinical_plots import plot_clinical
from dentvlm.evaluation.report import confusion_counts, plot_confusion, plot_per_class_f1, write_report_md
from dentvlm.evaluation.tables import log_clinical, log_test_variant, wandb_logger
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
        target_sensitivity: The validation sensitivity the clinical metrics' second threshold must reach.
        min_group_size: Subgroups (gender, age band, ...) with fewer test checkups are counted, not scored.
        calibration_bins: Equal-width probability bins of the calibration error and reliability diagrams.
    """

    def __init__(self, out_dir: str | None = None,
                 baselines: list[str] = list(BASELINES),  # noqa: B006 (a YAML default; copied below)
                 few_shot: int = 2, bootstrap: int = 1000, seed: int = 0, keep_variants: bool = True,
                 target_sensitivity: float = 0.9, min_group_size: int = 20, calibration_bins: int = 10):
        bad = [b for b in baselines if b not in BASELINES]
        if bad:
            raise ValueError(f"results.baselines: unknown {bad}; choose from {BASELINES}")
        self.out_dir = Path(out_dir) if out_dir else None
        self.baselines, self.few_shot = list(baselines), few_shot
        self.bootstrap, self.seed, self.keep_variants = bootstrap, seed, keep_variants
        self.clinical = ClinicalSettings(target_sensitivity, min_group_size, calibration_bins, bootstrap, seed)
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
        tested = [p for p in predictions if p.split == "test"]  # validation checkups only choose thresholds
        entry: dict = {"predictions": predictions}
        details = getattr(pl_module, "variant_details", None)
        if callable(details):  # what was scored: a checkpoint and its base model, an endpoint's requests and cost
            entry["details"] = details()
        for callback in trainer.callbacks:
            if isinstance(callback, (ClassificationMetrics, ReportMetrics)) and "test" in callback.results:
                metrics = dict(callback.results["test"])
                mine = [p for p in tested if p.task == callback.task]
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
            out = self.out_dir
            plots = {f"test/{name}/classification/confusion_matrix": out / f"confusion_{name}.png",
                     "test/classification/per_class_f1": out / "per_class_f1.png"}
            plots.update({f"test/{name}/classification/{key}": out / f"{key}_{name}.png"
                          for key in ("roc", "precision_recall", "reliability")})
            log_test_variant(logger, name, tested, plots, trainer.global_step)
            if "clinical" in entry:
                log_clinical(logger, name, entry["clinical"], list(datamodule.classes), trainer.global_step)

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
                "tasks": list(datamodule.eval_tasks), "bootstrap": self.bootstrap, "few_shot": self.few_shot,
                "target_sensitivity": self.clinical.target_sensitivity, "min_group_size": self.clinical.min_group_size,
                "calibration_bins": self.clinical.calibration_bins}

    def write(self, datamodule) -> None:
        out = self.out_dir
        out.mkdir(parents=True, exist_ok=True)
        hp = datamodule.hparams
        classes = list(datamodule.classes)
        settings = self.settings(datamodule)
        tasks = [t for entry in self.variants.values() for t in ("classification", "report") if t in entry]
        settings["tasks"] = list(dict.fromkeys(settings["tasks"] + tasks))  # kept variants may hold others
        self._score_clinical(classes, hp.multi_label)
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
        self._plots(classes, hp.multi_label)

    def _score_clinical(self, classes: list[str], multi_label: bool) -> None:
        """Gives each variant with classification results its ``clinical`` entry, unless it holds one computed
        under the same settings (a kept variant's: the bootstrap takes seconds per variant)."""
        for entry in self.variants.values():
            if "classification" in entry and entry.get("clinical", {}).get("settings") != self.clinical.to_dict():
                entry["clinical"] = clinical_metrics(entry["predictions"], classes, multi_label, self.clinical)

    def _plots(self, classes: list[str], multi_label: bool) -> None:
        """The PNGs of the test split: confusion matrices, per-class F1, and the clinical figures (ROC and PR
        curves, reliability diagrams)."""
        out, per_class, tested = self.out_dir, {}, {}
        for name, entry in self.variants.items():
            if "classification" not in entry:
                continue
            mine = [p for p in entry["predictions"] if p.task == "classification" and p.split == "test"]
            matrix = confusion_counts([p.to_dict() for p in mine], classes, multi_label)
            plot_confusion(out / f"confusion_{name}.png", matrix, classes, f"classification: {name}")
            per_class[name] = entry["classification"]["per_class_f1"]
            tested[name] = scored(mine, classes, multi_label)
        if per_class:
            plot_per_class_f1(out / "per_class_f1.png", per_class, classes, "classification: per-class F1")
        plot_clinical(out, tested, {name: self.variants[name]["clinical"] for name in tested}, classes)

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
