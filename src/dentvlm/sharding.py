"""`dentvlm shard`: a source (COde release or ShareGPT JSON) -> split WebDataset shards + manifest.json.

Flow: read every entry's text (cheap) -> patient-level split -> prepare images on all cores
(ordered, so output is deterministic) -> write size-bounded, checksummed shards per split into a
build folder beside `out` -> manifest last -> swap into `out` (see `dentvlm.shard_folder`): a folder
with a manifest is complete, and a failed build leaves the old one as it was.
"""

from __future__ import annotations

import difflib
import json
import os
import random
import re
import sys
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from multiprocessing import get_context
from pathlib import Path

from tqdm import tqdm

from dentvlm.data.shards import PARTIAL_SUFFIX, SampleRejected, ShardWriter
from dentvlm.data.split import SPLITS, patient_split
from dentvlm.ingest.code_release import read_code_release
from dentvlm.ingest.common import IngestError, Skip, SourceItem
from dentvlm.ingest.images import ImagePolicy, prepare_images
from dentvlm.ingest.sharegpt import read_sharegpt
from dentvlm.labels import DEFAULT_CLASSES, LabelParser
from dentvlm.processes import die_with_parent
from dentvlm.records import MODALITIES
from dentvlm.shard_folder import MANIFEST, BuildFolder, listed_shards

# 2: per-shard sha256 (checked by the reader with the sample count), and records that say whether
# they are labelled (the multi-label "none" answer); version 1 shards lack both.
FORMAT_VERSION = 2
IMAGE_FAILED_IN_CONVERSATION = "image_failed_in_conversation"


def read_source(source: Path, source_format: str, salt: str, parser: LabelParser, image_root: Path | None):
    """Dispatch to the reader for `source_format` ("auto" picks by file type)."""
    if source_format == "auto":
        source_format = "sharegpt" if source.suffix.lower() == ".json" else "code"
    if source_format == "code":
        return read_code_release(source, salt, parser)
    if source_format == "sharegpt":
        return read_sharegpt(source, salt, parser, image_root)
    raise IngestError(f"unknown source format {source_format!r}; expected auto, code or sharegpt")


def build_shards(
    source: Path,
    out: Path,
    salt: str,
    source_format: str = "auto",
    classes: Sequence[str] = DEFAULT_CLASSES,
    val: float = 0.1,
    test: float = 0.15,
    seed: int = 0,
    policy: ImagePolicy = ImagePolicy(),  # noqa: B008 (frozen dataclass)
    max_count: int = 256,
    max_bytes: int = 1_000_000_000,
    strict: bool = False,
    workers: int | None = None,
    image_root: Path | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> dict:
    """Convert `source` into shards under `out`; returns the manifest (also written to out/manifest.json).

    Bad entries raise `IngestError` under `strict`, else they are skipped and counted by reason.
    """
    parser = LabelParser(classes)
    folder = BuildFolder(out, overwrite)  # checks `out` before any work
    items_iter, description = read_source(source, source_format, salt, parser, image_root)
    skipped_checkups: Counter = Counter()
    items: list[SourceItem] = []
    for item in items_iter:
        if isinstance(item, Skip):
            _skip(item, skipped_checkups, strict)
        else:
            items.append(item)
    if not items:
        raise IngestError(f"{source}: no usable checkups ({dict(skipped_checkups)} skipped)")

    splits = patient_split([i.checkup.patient for i in items],
                           [[c for c in i.checkup.labels if c in parser.classes] for i in items], val, test, seed)
    by_split = {name: [i for i, s in zip(items, splits) if s == name] for name in SPLITS}
    for name in SPLITS:  # shuffle within a split so shards are not ordered by source row or patient
        random.Random(f"{seed}:{name}").shuffle(by_split[name])

    skipped_images: Counter = Counter()
    summary = {}
    with folder as build, _image_pool(workers) as pool_map:
        for name in SPLITS:
            writer = ShardWriter(build, name, max_count, max_bytes)
            stats = _write_split(by_split[name], writer, pool_map, policy, parser.classes, strict,
                                 skipped_checkups, skipped_images, progress, name)
            summary[name] = {**stats, "shards": [asdict(info) for info in writer.close()]}

        manifest = {
            "format": "dentvlm-shards",
            "version": FORMAT_VERSION,
            "source": description,
            "classes": list(parser.classes),
            "settings": {
                "seed": seed, "val": val, "test": test, "strict": strict,
                "image_long_side": policy.long_side, "jpeg_quality": policy.jpeg_quality,
                "max_source_pixels": policy.max_source_pixels, "max_count": max_count, "max_bytes": max_bytes,
            },
            "splits": summary,
            "skipped": {"checkups": dict(sorted(skipped_checkups.items())),
                        "images": dict(sorted(skipped_images.items()))},
        }
        _write_json_atomic(build / MANIFEST, manifest)
        folder.publish()
    print(summary_line(manifest), file=sys.stderr)
    return manifest


def _write_split(items, writer, pool_map, policy, classes, strict, skipped_checkups, skipped_images,
                 progress, name) -> dict:
    patients, labels, images, tasks = set(), Counter(), Counter(), Counter()
    written = 0
    jobs = ((i.image_paths, policy) for i in items)
    # The bar only on a terminal (disable=None): in a log file its redraws are noise, and the summary
    # line says what happened.
    bar = tqdm(total=len(items), desc=f"shard {name}", unit="checkup", disable=None if progress and items else True)
    try:
        for item, results in zip(items, pool_map(prepare_images, jobs)):
            bar.update()
            variants = _write_item(item, results, writer, classes, strict, skipped_checkups, skipped_images)
            if variants is None:
                continue
            written += 1
            patients.add(item.checkup.patient)
            labels.update(c for c in item.checkup.labels if c in classes)
            images.update(item.checkup.modalities)
            tasks.update(variants)
    finally:
        bar.close()  # ends the bar's line before any error message
    return {
        "checkups": written,
        "patients": len(patients),
        "images": {m: images[m] for m in MODALITIES},
        "labels": {c: labels[c] for c in classes},
        "tasks": dict(sorted(tasks.items())),
    }


def _write_item(item, results, writer, classes, strict, skipped_checkups, skipped_images) -> set[str] | None:
    """Write one checkup with its prepared images; its task variants, or None when it was skipped."""
    checkup, kept, modalities = item.checkup, [], []
    for modality, result in zip(checkup.modalities, results):
        if isinstance(result, tuple):
            reason, message = result
            _skip(Skip(reason, f"{item.where}: {message}"), skipped_images, strict)
            continue
        kept.append(result)
        modalities.append(modality)
    if checkup.conversation is not None and len(kept) < len(results):
        # A conversation's <image> placeholders point at fixed positions: it cannot lose one.
        skipped_checkups[IMAGE_FAILED_IN_CONVERSATION] += 1
        return None
    checkup.modalities = modalities
    variants = checkup.tasks(classes)
    try:
        writer.write(checkup, kept, variants)
    except SampleRejected as exc:  # the reader would refuse it: a skip now, not a crash in training
        _skip(Skip(exc.reason, f"{item.where}: {exc}"), skipped_checkups, strict)
        return None
    return variants


class _image_pool:
    """Context manager giving an ordered `map` over processes (or in-process for one worker)."""

    def __init__(self, workers: int | None):
        self.workers = workers if workers is not None else (os.cpu_count() or 1)
        self._executor = None

    def __enter__(self):
        if self.workers <= 1:
            return map
        # spawn, not fork: the parent may hold threads (tokenizers, torch) that fork would copy broken.
        # Workers import only dentvlm.ingest.images (PIL), so they start in well under a second.
        self._executor = ProcessPoolExecutor(self.workers, mp_context=get_context("spawn"),
                                             initializer=die_with_parent, initargs=(os.getpid(),))
        return lambda fn, jobs: self._executor.map(fn, jobs, chunksize=4)

    def __exit__(self, *exc_info):
        if self._executor is not None:
            self._executor.shutdown(cancel_futures=True)


def _skip(skip: Skip, counter: Counter, strict: bool) -> None:
    if strict:
        raise IngestError(f"{skip.message} [{skip.reason}; run without --strict to skip and count]")
    counter[skip.reason] += 1


def _write_json_atomic(path: Path, data: dict) -> None:
    partial = path.with_name(path.name + PARTIAL_SUFFIX)
    partial.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(partial, path)


def summary_line(manifest: dict) -> str:
    """One line: checkups per split, shard counts, skips by reason."""
    splits = manifest["splits"]
    parts = " / ".join(f"{n} {s['checkups']}" for n, s in splits.items())
    shards = sum(len(s["shards"]) for s in splits.values())
    skips = manifest["skipped"]
    skip_text = "; ".join(
        f"{sum(c.values())} {kind} skipped" + (f" ({_reasons(c)})" if c else "") for kind, c in skips.items()
    )
    return f"dentvlm shard: {parts} checkups in {shards} shards; {skip_text}"


def _reasons(counter: dict[str, int]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in counter.items())


def load_manifest(shard_dir: Path) -> dict:
    """Read and check a shard folder's manifest (untrusted: every field the readers use is checked).

    Raises:
        FileNotFoundError: no manifest.
        ValueError: not a current dentvlm manifest (older versions: rebuild), or malformed.
    """
    path = Path(shard_dir) / MANIFEST
    if not path.is_file():
        folder = Path(shard_dir)
        state = "exists but holds no" if folder.is_dir() else "does not exist, so no"
        relative = "" if folder.is_absolute() else f" (relative paths are read from the current folder, {Path.cwd()})"
        near = _near_shard_folder(folder)
        hint = f"did you mean {near}? Otherwise build" if near else "build"
        raise FileNotFoundError(f"{shard_dir}: the folder {folder.absolute()} {state} {MANIFEST}{relative}; {hint} "
                                "shards with `dentvlm shard` first")
    try:
        manifest = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ValueError(f"{path}: not a readable manifest ({type(exc).__name__}: {exc})"[:400]) from None
    if not isinstance(manifest, dict) or manifest.get("format") != "dentvlm-shards":
        raise ValueError(f"{path}: not a dentvlm shard manifest")
    if manifest.get("version") != FORMAT_VERSION:
        raise ValueError(f"{path}: shard format version {manifest.get('version')!r}, this dentvlm reads version "
                         f"{FORMAT_VERSION}; rebuild the shards with `dentvlm shard ... --overwrite true`")
    _check_manifest(manifest, path)
    return manifest


def _near_shard_folder(folder: Path) -> str | None:
    """A shard folder whose path differs from a mistyped one by near misses (`shard/demo` -> `shards/demo`)."""
    parts = folder.parts
    current = Path(parts[0]) if folder.is_absolute() else Path(".")
    for part in parts[1:] if folder.is_absolute() else parts:
        if not (current / part).exists():
            try:
                names = [p.name for p in current.iterdir() if p.is_dir()]
            except OSError:
                return None
            close = difflib.get_close_matches(part, names, n=1, cutoff=0.75)
            if not close:
                return None
            part = close[0]
        current = current / part
    return str(current) if (current / MANIFEST).is_file() and current != folder else None


def _check_manifest(manifest: dict, path: Path) -> None:
    listed_shards(manifest, str(path))
    classes = manifest.get("classes")
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
        raise ValueError(f"{path}: 'classes' must be a list of names")
    for split, info in manifest["splits"].items():
        tasks = info.get("tasks") if isinstance(info, dict) else None
        if not isinstance(tasks, dict) or not all(_count(v) for v in tasks.values()):
            raise ValueError(f"{path}: split {split!r} has no valid task counts")
        for shard in info["shards"]:
            where = f"{path}: shard {shard['file']}"
            tasks = shard.get("tasks")
            counts = [shard.get("samples"), shard.get("bytes"), *(tasks.values() if isinstance(tasks, dict) else [])]
            if not isinstance(tasks, dict) or not all(_count(v) for v in counts):
                raise ValueError(f"{where}: sample, byte and task counts must be whole numbers")
            if not isinstance(shard.get("sha256"), str) or not re.fullmatch(r"[0-9a-f]{64}", shard["sha256"]):
                raise ValueError(f"{where}: no valid sha256")


def _count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
