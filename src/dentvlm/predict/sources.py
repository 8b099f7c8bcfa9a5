"""New checkups to predict for, from a clinic's own files:

- a folder in the COde layout (``complete_dataset.csv`` + ``Images/Photographs`` + ``Images/Radiographs``)
  without the ``anomalies_en`` column, or with it empty;
- a CSV file, or a JSONL file (one object per line), with the same columns: ``checkup_id`` and the
  patient text fields, and ``photographs`` / ``radiographs`` naming image files relative to the image
  root (default: the file's folder), separated by commas or semicolons (JSONL: also a list).

Columns are found by name with the COde reader's aliases. The same safety rules as ingestion hold:
image paths must stay inside their folder (checked again when the file is opened: a regular file of
bounded size). Each checkup is keyed by the user's own ``checkup_id``: this is their data, on their
machine, and the output goes back to them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from dentvlm.ingest.code_release import ALIASES, CSV_FIELD_LIMIT, column_key, file_names, locate_release, open_csv
from dentvlm.ingest.common import DUPLICATE, IMAGE_OUTSIDE_SOURCE, MALFORMED_ROW, NON_UTF8, IngestError, resolve_inside
from dentvlm.records import INFO_FIELDS

# What the model reads of a new checkup: patient information and the examination notes.
INPUT_FIELDS = (*INFO_FIELDS, "examination")
IMAGE_COLUMNS = (("photographs", "photograph"), ("radiographs", "radiograph"))
MISSING_ID = "missing_identifier"


@dataclass
class NewCheckup:
    """A checkup to predict for.

    Attributes:
        checkup_id: The user's own identifier (the key of its output line).
        where: File and row, for messages.
        fields: Text by `INPUT_FIELDS` name (present fields only).
        images: (path, modality) per image, in the source's order; paths are inside their folder.
    """

    checkup_id: str
    where: str
    fields: dict[str, str] = field(default_factory=dict)
    images: list[tuple[Path, str]] = field(default_factory=list)


@dataclass
class Refused:
    """A source row that cannot be predicted for: its id (when it has one), reason and message."""

    checkup_id: str | None
    reason: str
    message: str


def read_new_checkups(source: Path, image_root: Path | None = None) -> Iterator[NewCheckup | Refused]:
    """The checkups of `source` (see the module docstring), in file order.

    Raises:
        IngestError: the source is missing, of an unknown kind, or its header lacks ``checkup_id``.
    """
    source = Path(source)
    if source.is_dir():
        release = locate_release(source)
        folders = {"photographs": release.photo_dir, "radiographs": release.radiograph_dir}
        if image_root is not None:
            raise IngestError(f"{source}: a COde-layout folder keeps its images in Images/; drop --image_root")
        return _from_csv(release.csv_path, folders, release.root)
    if not source.is_file():
        raise IngestError(f"{source}: no such folder or file")
    root = Path(image_root) if image_root is not None else source.parent
    folders = {"photographs": root, "radiographs": root}
    if source.suffix.lower() == ".csv":
        return _from_csv(source, folders, root)
    if source.suffix.lower() == ".jsonl":
        return _from_jsonl(source, folders, root)
    raise IngestError(f"{source}: expected a COde-layout folder, a .csv or a .jsonl file")


def _from_csv(path: Path, folders: dict[str, Path], boundary: Path) -> Iterator[NewCheckup | Refused]:
    table = open_csv(path, required=("checkup_id",))
    seen: set[str] = set()
    for row in table.rows():
        if not isinstance(row, tuple):
            yield Refused(None, row.reason, row.message)
            continue
        where, cells = row
        yield _checkup(where, cells, {c: file_names(cells.get(c, "")) for c, _ in IMAGE_COLUMNS}, folders, boundary,
                       seen)


def _from_jsonl(path: Path, folders: dict[str, Path], boundary: Path) -> Iterator[NewCheckup | Refused]:
    canonical = {column_key(alias): name for name, aliases in ALIASES.items() for alias in (name, *aliases)}
    seen: set[str] = set()
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            where = f"{path.name} line {number}"
            if not raw.strip():
                continue
            if len(raw) > CSV_FIELD_LIMIT:
                yield Refused(None, MALFORMED_ROW, f"{where}: over {CSV_FIELD_LIMIT:,} bytes")
                continue
            try:
                record = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError:
                yield Refused(None, NON_UTF8, f"{where}: bytes that are not UTF-8")
                continue
            except (json.JSONDecodeError, RecursionError):
                yield Refused(None, MALFORMED_ROW, f"{where}: not a JSON object")
                continue
            if not isinstance(record, dict):
                yield Refused(None, MALFORMED_ROW, f"{where}: not a JSON object")
                continue
            cells, images, problem = _json_cells(record, canonical)
            if problem:
                yield Refused(cells.get("checkup_id") or None, MALFORMED_ROW, f"{where}: {problem}")
                continue
            yield _checkup(where, cells, images, folders, boundary, seen)


def _json_cells(record: dict, canonical: dict[str, str]) -> tuple[dict[str, str], dict[str, list[str]], str]:
    """(text cells by canonical name, image names per column, a problem or "")."""
    cells: dict[str, str] = {}
    images: dict[str, list[str]] = {column: [] for column, _ in IMAGE_COLUMNS}
    for key, value in record.items():
        name = canonical.get(column_key(str(key)))
        if name is None:
            continue  # columns the model does not read
        if name in images:
            if isinstance(value, list) and all(isinstance(v, str) for v in value):
                images[name] = [v.strip() for v in value if v.strip()]
            elif isinstance(value, str):
                images[name] = file_names(value)
            elif value is not None:
                return cells, images, f"{key!r} must be a list of file names or a string"
        elif isinstance(value, (str, int, float)) and not isinstance(value, bool):
            cells[name] = str(value).strip()
        elif value is not None:
            return cells, images, f"{key!r} must be text or a number"
    return cells, images, ""


def _checkup(where: str, cells: dict[str, str], names: dict[str, list[str]], folders: dict[str, Path],
             boundary: Path, seen: set[str]) -> NewCheckup | Refused:
    checkup_id = cells.get("checkup_id", "")
    if not checkup_id:
        return Refused(None, MISSING_ID, f"{where}: empty checkup_id")
    if checkup_id in seen:
        return Refused(checkup_id, DUPLICATE, f"{where}: checkup_id {checkup_id!r} seen in an earlier row")
    seen.add(checkup_id)
    images = []
    for column, modality in IMAGE_COLUMNS:
        for name in names.get(column, []):
            path = resolve_inside(folders[column], name, boundary)
            if path is None:
                return Refused(checkup_id, IMAGE_OUTSIDE_SOURCE,
                               f"{where}: {column} entry {name!r} points outside {folders[column]}")
            images.append((path, modality))
    fields = {name: cells[name] for name in INPUT_FIELDS if cells.get(name)}
    return NewCheckup(checkup_id, where, fields, images)
