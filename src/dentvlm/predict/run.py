"""Predict for new checkups: read them (`dentvlm.predict.sources`), prepare their images as ingestion
does, format them as the model was trained (task, classes, modality, image budget from the checkpoint's
run config), generate greedily in batches, and write one JSONL line per checkup plus a summary.
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from dentvlm.predict.output import OutputFolder, check_output_folder
from dentvlm.predict.sources import NewCheckup, Refused, read_new_checkups

EMPTY = "empty_checkup"
OVER_CONTEXT = "over_context"
DATA_DEFAULTS = {"task": "classification", "multi_label": True, "none_answer": "none", "modality": "both",
                 "image_modalities": ["photograph", "radiograph"], "max_images": 8, "cutoff_len": 4096,
                 "min_pixels": None, "max_pixels": None, "context_len": None, "decode_long_side": None}


@dataclass
class Prepared:
    """A checkup with its images decoded, ready to format (or `refused`)."""

    checkup: NewCheckup
    images: list  # PIL images, in source order
    modalities: list[str]
    skipped_images: list[dict]


def predict_folder(checkpoint: str, source: str, out: str, tasks: list[str] | None, overrides: dict,
                   image_root: str | None, policy, batch_size: int, max_new_tokens: int | None, device: str,
                   dtype: str, strict: bool, overwrite: bool, base_model: str | None = None) -> dict:
    """Write ``predictions.jsonl`` and ``summary.json`` to `out` (see `dentvlm.predict.output`); returns the summary."""
    from dentvlm.inference.load import load_for_inference

    target = Path(out)
    source_path = Path(source)
    image_folder = Path(image_root) if image_root else (source_path if source_path.is_dir() else source_path.parent)
    check_output_folder(target, overwrite, [source_path, image_folder])
    checkups = read_new_checkups(source_path, Path(image_root) if image_root else None)
    model = load_for_inference(checkpoint, dtype, device=_device(device), base_model=base_model)
    settings = {**DATA_DEFAULTS, **{k: v for k, v in model.data.items() if k in DATA_DEFAULTS},
                **{k: v for k, v in overrides.items() if v is not None}}
    tasks = list(tasks or [model.description.get("task") or settings["task"]])
    predictor = Predictor(model, settings, tasks, max_new_tokens or model.max_new_tokens)
    folder = OutputFolder(target)
    with folder as staging:
        summary = _run(checkups, predictor, policy, batch_size, strict, staging / "predictions.jsonl")
        summary.update(source=str(source), checkpoint=str(checkpoint), tasks=tasks, classes=list(model.classes),
                       image_long_side=policy.long_side,
                       settings={k: settings[k] for k in ("multi_label", "modality", "image_modalities", "max_images")})
        (staging / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
        folder.publish()
    return summary


def _run(checkups, predictor: Predictor, policy, batch_size: int, strict: bool, path: Path) -> dict:
    counts = {"read": 0, "predicted": 0, "skipped": Counter(), "images_used": 0, "images_not_shown": 0,
              "images_skipped": Counter()}
    start = time.monotonic()
    with path.open("w", encoding="utf-8") as handle:
        pending: list[Prepared | Refused] = []  # lines keep the source's order
        for item in checkups:
            counts["read"] += 1
            prepared = item if isinstance(item, Refused) else prepare(item, policy, strict,
                                                                      predictor.settings["decode_long_side"])
            if isinstance(prepared, Prepared):
                shown = len(predictor.shown(prepared))
                counts["images_used"] += shown
                counts["images_not_shown"] += len(prepared.images) - shown
                counts["images_skipped"].update(s["reason"] for s in prepared.skipped_images)
            elif strict:
                _refuse(prepared, counts, strict, handle)
            pending.append(prepared)
            if sum(isinstance(p, Prepared) for p in pending) == batch_size:
                _flush(pending, predictor, counts, strict, handle)
        _flush(pending, predictor, counts, strict, handle)
    seconds = time.monotonic() - start
    return {"checkups": {"read": counts["read"], "predicted": counts["predicted"],
                         "skipped": dict(sorted(counts["skipped"].items()))},
            "images": {"used": counts["images_used"], "not_shown": counts["images_not_shown"],
                       "skipped": dict(sorted(counts["images_skipped"].items()))},
            **predictor.tally(), "seconds": round(seconds, 2),
            "checkups_per_second": round(counts["predicted"] / seconds, 3) if seconds > 0 else None}


def _refuse(refused: Refused, counts: dict, strict: bool, handle) -> None:
    from dentvlm.ingest.common import IngestError

    if strict:
        raise IngestError(f"{refused.message} [{refused.reason}; run without --strict to skip and count]")
    counts["skipped"][refused.reason] += 1
    if refused.checkup_id is not None:  # a row without an id has no line to be joined back by
        handle.write(json.dumps({"checkup_id": refused.checkup_id, "skipped": refused.reason,
                                 "message": refused.message}, ensure_ascii=False) + "\n")


def _flush(pending: list[Prepared | Refused], predictor: Predictor, counts: dict, strict: bool, handle) -> None:
    ready = [p for p in pending if isinstance(p, Prepared)]
    answers = iter(predictor(ready) if ready else [])
    for prepared in pending:
        result = prepared if isinstance(prepared, Refused) else next(answers)
        if isinstance(result, Refused):
            _refuse(result, counts, strict, handle)
            continue
        counts["predicted"] += 1
        shown = len(predictor.shown(prepared))
        line = {"checkup_id": prepared.checkup.checkup_id, **result,
                "images": {"used": shown, "not_shown": len(prepared.images) - shown,
                           "skipped": prepared.skipped_images}}
        handle.write(json.dumps(line, ensure_ascii=False) + "\n")
    pending.clear()


def prepare(checkup: NewCheckup, policy, strict: bool, decode_long_side: int | None = None) -> Prepared | Refused:
    """Decode `checkup`'s images exactly as shards store and training reads them (`model_image`: bounded,
    EXIF-rotated, 8-bit, resized to the policy's long side, JPEG); a rejected image is left out and
    reported (a size the model's processor refuses included)."""
    from dentvlm.ingest.common import IngestError
    from dentvlm.ingest.images import ImageRejected, read_source_file
    from dentvlm.ingest.model_image import model_image

    images, modalities, skipped = [], [], []
    for position, (path, modality) in enumerate(checkup.images, start=1):
        try:
            images.append(model_image(read_source_file(path), policy, str(path), decode_long_side))
            modalities.append(modality)
        except ImageRejected as exc:
            if strict:
                raise IngestError(f"{checkup.where}: {exc} [{exc.reason}; run without --strict to skip and count]") \
                    from None
            print(f"dentvlm predict: {checkup.where}: image {position} left out: {exc}", file=sys.stderr)
            skipped.append({"position": position, "modality": modality, "reason": exc.reason})
    if not images and not checkup.fields:
        return Refused(checkup.checkup_id, EMPTY, f"{checkup.where}: no usable image and no text to predict from")
    return Prepared(checkup, images, modalities, skipped)


def _device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class Predictor:
    """Formats prepared checkups for each task, generates greedily, parses labels and report sections."""

    def __init__(self, model, settings: dict, tasks: list[str], max_new_tokens: int):
        from dentvlm.data.collate import ChatEncoder
        from dentvlm.data.tasks import TASKS
        from dentvlm.inference.generate import Decoding
        from dentvlm.labels import LabelParser

        bad = [t for t in tasks if t not in TASKS or t == "chat"]
        if bad:
            raise ValueError(f"--tasks: {bad} cannot be predicted; choose from classification, report")
        self.model, self.settings, self.tasks = model, settings, tasks
        self.encoder = ChatEncoder(model.processor, settings["cutoff_len"], "error", settings["min_pixels"],
                                   settings["max_pixels"], settings["context_len"] or model.context_len)
        self.decoding = Decoding(max_new_tokens)
        self.parser = LabelParser(model.classes)
        self.labels: Counter = Counter()
        self.unparseable: Counter = Counter()

    def __call__(self, batch: list[Prepared]) -> list[dict | Refused]:
        from dentvlm.data.collate import Overlong
        from dentvlm.inference.generate import generate

        results: list[dict | Refused] = [{} for _ in batch]
        for task in self.tasks:
            encoded, rows = [], []
            for row, prepared in enumerate(batch):
                if isinstance(results[row], Refused):
                    continue
                try:
                    encoded.append(self.encoder.encode(self.example(prepared, task), training=False))
                    rows.append(row)
                except Overlong as exc:
                    checkup = prepared.checkup
                    results[row] = Refused(checkup.checkup_id, OVER_CONTEXT, f"{checkup.where}: {exc}")
            if not encoded:
                continue
            answers = generate(self.model.network, self.model.processor, encoded, self.decoding,
                               self.encoder.pad_id, autocast=self.model.autocast)
            for row, answer in zip(rows, answers):
                if not isinstance(results[row], Refused):
                    results[row][task] = self.parse(task, answer.text)
        return results

    def example(self, prepared: Prepared, task: str):
        from dentvlm.data.tasks import format_checkup

        s = self.settings
        return format_checkup(self._checkup(prepared), [prepared.images[i] for i in self.shown(prepared)], task,
                              self.model.classes, s["multi_label"], s["modality"], s["none_answer"])

    def shown(self, prepared: Prepared) -> list[int]:
        """Indices of the images the model is shown: the run's modalities, at most its max_images (a
        checkup's other usable images are counted as not shown)."""
        from dentvlm.data.tasks import select_images

        s = self.settings
        if s["modality"] == "text":
            return []
        return select_images(self._checkup(prepared), tuple(s["image_modalities"]), s["max_images"])

    @staticmethod
    def _checkup(prepared: Prepared):
        from dentvlm.records import Checkup

        fields = prepared.checkup.fields
        return Checkup(key="new", patient="-", modalities=prepared.modalities,
                       info={k: v for k, v in fields.items() if k != "examination"},
                       report={"examination": fields["examination"]} if "examination" in fields else {},
                       labelled=False)

    def parse(self, task: str, text: str) -> dict:
        from dentvlm.data.tasks import parse_report
        from dentvlm.metrics.classification import parse_prediction
        from dentvlm.predictions import Prediction

        prediction = Prediction("new", task, "", "", text)
        labels = parse_prediction(prediction, self.parser)
        if labels is None:
            self.unparseable[task] += 1
        else:
            self.labels.update(f"{task}:{label}" for label in labels)
        # labels are the affirmed conditions; what the answer rules out or only suspects is kept beside them
        result = {"answer": text, "labels": labels, "negated": prediction.negated_labels,
                  "uncertain": prediction.uncertain_labels}
        if task == "report":
            result["sections"] = parse_report(text)
        return result

    def tally(self) -> dict:
        """Label counts and unparseable answers per task (for the summary)."""
        return {task: {"labels": {c: self.labels[f"{task}:{c}"] for c in self.model.classes},
                       "unparseable": self.unparseable[task]} for task in self.tasks}


def training_long_side(checkpoint: str) -> int | None:
    """The image long side of the shards the checkpoint was trained on: recorded in its dentvlm.json, else
    read from its run config's data.shards; None when neither says."""
    from dentvlm.checkpointing import DESCRIPTION
    from dentvlm.inference.load import model_folder, read_json, run_data_settings
    from dentvlm.sharding import load_manifest

    folder = model_folder(checkpoint)
    recorded = read_json(folder / DESCRIPTION).get("shard_images", {}).get("image_long_side")
    if isinstance(recorded, int):
        return recorded
    shards = run_data_settings(folder).get("shards")
    if not shards:
        return None
    try:
        return int(load_manifest(Path(shards))["settings"]["image_long_side"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
