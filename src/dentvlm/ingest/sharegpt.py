"""Read ShareGPT-format multimodal JSON (LLaMA-Factory and the COde authors' fine-tuning files).

Both common styles are accepted: ``messages`` with ``role``/``content`` and ``conversations`` with
``from``/``value``. ``<image>`` placeholders are matched, in order, to the entry's ``images``.
When the final answer is a COde-style report (``diagnosis: ...`` lines) or a plain list of
conditions, the record also gets its report sections and labels, so the same shards serve the
classification and report tasks, not only replay of the conversation.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dentvlm.ingest.common import (
    BAD_ENTRY,
    IMAGE_COUNT_MISMATCH,
    IMAGE_OUTSIDE_SOURCE,
    IngestError,
    Skip,
    SourceItem,
    clean_text,
    resolve_inside,
)
from dentvlm.labels import LabelParser
from dentvlm.records import IMAGE_PLACEHOLDER, INFO_FIELDS, REPORT_SECTIONS, Checkup, pseudonym

ROLE_NAMES = {
    "user": "user", "human": "user",
    "assistant": "assistant", "gpt": "assistant", "model": "assistant", "bot": "assistant",
    "system": "system",
}
# "Doctor's orders" and friends as written in report lines -> REPORT_SECTIONS / INFO_FIELDS names.
_LINE_KEY_ALIASES = {
    "doctor_s_orders": "doctors_orders", "doctor_orders": "doctors_orders",
    "past_history": "past_medical_record", "past_medical_history": "past_medical_record",
    "visit": "visit_type", "sex": "gender",
}


def read_sharegpt(
    path: Path, salt: str, parser: LabelParser, image_root: Path | None = None
) -> tuple[Iterator[SourceItem | Skip], dict]:
    """Open a ShareGPT JSON list and return (items, source description for the manifest).

    Args:
        path: The JSON file (a list of entries).
        salt: Pseudonymisation salt for entry ids.
        parser: Label parser used to recover labels from answers.
        image_root: Folder that image paths are relative to, and must stay inside (symlinks
            resolved; default: the JSON's folder).
    """
    try:
        entries = json.loads(path.read_bytes().decode("utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise IngestError(f"{path}: not UTF-8 text ({exc})") from None
    except json.JSONDecodeError as exc:
        raise IngestError(f"{path}: not valid JSON ({exc})") from None
    except RecursionError:
        raise IngestError(f"{path}: JSON nested too deeply to be a ShareGPT list") from None
    if not isinstance(entries, list):
        raise IngestError(f"{path}: expected a JSON list of entries, got {type(entries).__name__}")
    root = image_root or path.parent
    # No file name: clinics name files after patients, and the manifest travels with the shards.
    description = {"kind": "sharegpt", "patient_grouping": False}
    items = (
        _entry_to_item(entry, index, path, root, salt, parser) for index, entry in enumerate(entries)
    )
    return items, description


def _entry_to_item(entry: Any, index: int, path: Path, root: Path, salt: str, parser) -> SourceItem | Skip:
    where = f"{path.name} entry {index}"
    if not isinstance(entry, dict):
        return Skip(BAD_ENTRY, f"{where}: entry is not a JSON object")
    turns = _turns(entry, where)
    if isinstance(turns, Skip):
        return turns
    images = entry.get("images", [])
    if isinstance(images, str):
        images = [images]
    if not isinstance(images, list) or not all(isinstance(i, str) for i in images):
        return Skip(BAD_ENTRY, f"{where}: 'images' must be a list of paths")
    paths = []
    for number, name in enumerate(images):
        image_path = resolve_inside(root, name)
        if image_path is None:
            return Skip(IMAGE_OUTSIDE_SOURCE, f"{where}: image {number} {name[:200]!r} is not a file name inside the "
                                              f"image root {root}")
        paths.append(image_path)
    placeholders = sum(t["content"].count(IMAGE_PLACEHOLDER) for t in turns)
    if placeholders != len(images):
        return Skip(IMAGE_COUNT_MISMATCH, f"{where}: {placeholders} {IMAGE_PLACEHOLDER} placeholders, "
                                          f"{len(images)} images")
    ident = str(entry.get("id", index))
    answer = next(t["content"] for t in reversed(turns) if t["role"] == "assistant")
    prompt = next((t["content"] for t in turns if t["role"] == "user"), "")
    report = {k: v for k, v in _key_value_lines(answer).items() if k in REPORT_SECTIONS}
    if "diagnosis" in report:
        stated = parser.stated_labels(report["diagnosis"])
        labels, labelled = stated or [], stated is not None
    else:
        labels, labelled = _label_list(answer, parser)
    checkup = Checkup(
        key=pseudonym(salt, "sample", ident),
        # No patient identity in ShareGPT files: each entry is its own group for splitting.
        patient=pseudonym(salt, "patient", f"sharegpt:{ident}"),
        modalities=["photograph"] * len(images),
        info={k: v for k, v in _key_value_lines(prompt, continued=False).items() if k in INFO_FIELDS},
        report=report,
        labels=labels,
        labelled=labelled,
        conversation=turns,
    )
    return SourceItem(where=where, checkup=checkup, image_paths=paths)


def _turns(entry: dict, where: str) -> list[dict[str, str]] | Skip:
    if "messages" in entry:
        raw, role_key, text_key = entry["messages"], "role", "content"
    elif "conversations" in entry:
        raw, role_key, text_key = entry["conversations"], "from", "value"
    else:
        return Skip(BAD_ENTRY, f"{where}: neither 'messages' nor 'conversations'")
    if not isinstance(raw, list) or not raw:
        return Skip(BAD_ENTRY, f"{where}: empty or non-list conversation")
    turns = []
    if isinstance(entry.get("system"), str) and entry["system"].strip():
        turns.append({"role": "system", "content": entry["system"]})
    for number, turn in enumerate(raw):
        if not isinstance(turn, dict) or not isinstance(turn.get(text_key), str):
            return Skip(BAD_ENTRY, f"{where} turn {number}: expected {{{role_key!r}, {text_key!r}: text}}")
        role = ROLE_NAMES.get(str(turn.get(role_key)).lower())
        if role is None:
            return Skip(BAD_ENTRY, f"{where} turn {number}: unknown role {turn.get(role_key)!r}")
        turns.append({"role": role, "content": turn[text_key]})
    if not any(t["role"] == "assistant" for t in turns):
        return Skip(BAD_ENTRY, f"{where}: no assistant turn to learn from")
    return turns


def _key_value_lines(text: str, continued: bool = True) -> dict[str, str]:
    """``field: value`` lines -> {normalised field: value}; with `continued`, other lines join the last
    field (multi-line report sections); without, they end it (the question after patient info)."""
    fields: dict[str, str] = {}
    last = None
    for line in text.splitlines():
        match = re.match(r"^\s*([A-Za-z][A-Za-z' _-]{1,40}):\s*(.*)$", line)
        key = _LINE_KEY_ALIASES.get(_norm_key(match.group(1)), _norm_key(match.group(1))) if match else None
        if key in REPORT_SECTIONS or key in INFO_FIELDS:
            fields[key] = clean_text(match.group(2))
            last = key
        elif not line.strip():
            continue
        elif last is not None and continued:
            fields[last] = f"{fields[last]}\n{line.strip()}"
        else:
            last = None
    return fields


def _label_list(answer: str, parser: LabelParser) -> tuple[list[str], bool]:
    """(affirmed labels, True) when the answer is nothing but a list of conditions, each possibly negated
    ("Caries, gingivitis", "No caries, no gingivitis", "龋齿、牙龈炎") or says "no disease"; ([], False)
    for any other answer, or one that only leaves conditions uncertain (its labels are unknown)."""
    pieces = [p for p in re.split(r"[,;\n，、；]|\band\b", answer) if p.strip(" .。")]
    if not pieces or not all(_names_one_condition(p, parser) or parser.says_no_finding(p) for p in pieces):
        return [], False
    stated = parser.stated_labels(answer)  # read whole: a negation's scope may span pieces ("no caries, or x")
    return stated or [], stated is not None


def _names_one_condition(piece: str, parser: LabelParser) -> bool:
    reading = parser.read(piece)
    return len(reading.affirmed + reading.negated + reading.uncertain) == 1


def _norm_key(name: str) -> str:
    return re.sub(r"[^a-z]+", "_", name.lower()).strip("_")
