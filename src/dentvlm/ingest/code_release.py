"""Read the COde release (``complete_dataset.csv`` + ``Images/``) or a clinic export in the same layout.

Columns are mapped by name: the release's full column list is not published, so only the columns
seen in code that reads it are required and the rest are optional, matched through aliases.
Patient and checkup identifiers are replaced by salted pseudonyms here and go no further.
"""

from __future__ import annotations

import csv
import difflib
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from dentvlm.ingest.common import (
    DUPLICATE,
    EMPTY_DIAGNOSIS,
    IMAGE_OUTSIDE_SOURCE,
    MALFORMED_ROW,
    NON_UTF8,
    UNRECOGNISED_DIAGNOSIS,
    IngestError,
    Skip,
    SourceItem,
    clean_text,
    has_undecodable_bytes,
    resolve_inside,
)
from dentvlm.labels import LabelParser
from dentvlm.records import INFO_FIELDS, REPORT_SECTIONS, Checkup, pseudonym

CSV_NAME = "complete_dataset.csv"
REQUIRED = ("checkup_id", "patient_id", "photographs", "anomalies_en")
# Canonical column -> other spellings seen or expected in exports (compared after `column_key`).
ALIASES: dict[str, tuple[str, ...]] = {
    "checkup_id": ("checkupid", "visit_id", "record_id"),
    "patient_id": ("patientid",),
    "photographs": ("photos", "intraoral_photographs"),
    "radiographs": ("xrays", "x_rays"),
    "anomalies_en": ("anomalies", "diseases_en"),
    "age": (),
    "gender": ("sex",),
    "visit_type": ("visit", "first_visit", "visit_kind"),
    "chief_complaint": (),
    "present_illness": ("history_of_present_illness",),
    "past_medical_record": ("past_history", "past_medical_history"),
    "examination": ("oral_examination",),
    "diagnosis": ("diagnosis_en",),
    "treatment_plan": (),
    "treatment_advice": (),
    "doctors_orders": ("doctor_orders", "doctors_order", "medical_orders"),
    "remarks": ("notes", "remark"),
}
CSV_FIELD_LIMIT = 10_000_000  # bytes; one clinical text cell is far smaller, a runaway quote is not


@dataclass
class CodeRelease:
    """A located release: its CSV, its image folders, and the folder that holds them (images must stay
    inside it, whatever links its subfolders are)."""

    csv_path: Path
    photo_dir: Path
    radiograph_dir: Path

    @property
    def root(self) -> Path:
        return self.csv_path.parent


def locate_release(path: Path) -> CodeRelease:
    """Find ``complete_dataset.csv`` and ``Images/`` from the release folder, its parent, or the CSV."""
    candidates = [path] if path.suffix.lower() == ".csv" else [path / CSV_NAME, path / "COde-Dataset" / CSV_NAME]
    for csv_path in candidates:
        if csv_path.is_file():
            images = csv_path.parent / "Images"
            return CodeRelease(csv_path, images / "Photographs", images / "Radiographs")
    raise IngestError(f"{path}: no {CSV_NAME} found (looked at {', '.join(map(str, candidates))})")


def map_columns(header: list[str], csv_path: Path, required: tuple[str, ...] = REQUIRED) -> dict[str, int]:
    """Canonical name -> header position. Raises naming missing required columns (with near misses)
    and columns that would fill the same field (a repeated name, or two spellings of one column such
    as ``patient_id`` and ``Patient ID``): picking one silently could read the wrong one."""
    positions: dict[str, list[int]] = {}
    for index, name in enumerate(header):
        positions.setdefault(column_key(name), []).append(index)
    mapping = {}
    for canonical, aliases in ALIASES.items():
        found = [index for key in (canonical, *aliases) for index in positions.get(key, [])]
        if len(found) > 1:
            names = ", ".join(f"{header[i]!r} (column {i + 1})" for i in found)
            raise IngestError(f"{csv_path}: columns {names} all fill {canonical!r}; keep one of them")
        if found:
            mapping[canonical] = found[0]
    missing = [name for name in required if name not in mapping]
    if missing:
        hints = []
        for name in missing:
            close = difflib.get_close_matches(name, header, n=1, cutoff=0.6)
            hints.append(f"{name!r}" + (f" (found {close[0]!r}: misnamed?)" if close else ""))
        raise IngestError(f"{csv_path}: missing required column(s) {', '.join(hints)}; header is {header}")
    return mapping


@dataclass
class CsvTable:
    """An opened clinical CSV: its header, the canonical column positions, and its rows."""

    path: Path
    header: list[str]
    columns: dict[str, int]
    reader: Iterator[list[str]]

    def rows(self) -> Iterator[tuple[str, dict[str, str]] | Skip]:
        """(where, cleaned cells by canonical column) per row, or a `Skip` for a row whose cell count
        differs from the header's or that holds bytes that are not UTF-8.

        Cells are matched to columns by position, never by name lookup, so a repeated header name
        cannot make one column shadow another.
        """
        reader, header, row_number = self.reader, self.header, 0
        while True:
            try:
                cells = next(reader, None)
            except csv.Error as exc:  # a NUL byte, a cell over the size limit: the rest cannot be trusted
                raise IngestError(f"{self.path} line {reader.line_num}: unreadable CSV ({exc})") from None
            if cells is None:
                return
            if not cells:  # a blank line is not a row
                continue
            row_number += 1
            where = f"{self.path.name} row {row_number} (line {reader.line_num})"
            if len(cells) != len(header):  # misaligned: which cell belongs to which column is unknown
                extra = " ".join(cells[len(header):])
                reason = NON_UTF8 if has_undecodable_bytes(extra) else MALFORMED_ROW
                yield Skip(reason, f"{where}: {len(cells)} cells, the header has {len(header)} columns")
                continue
            bad = [header[i] for i in self.columns.values() if has_undecodable_bytes(cells[i])]
            if bad:
                yield Skip(NON_UTF8, f"{where}: column(s) {bad} hold bytes that are not UTF-8")
                continue
            yield where, {name: clean_text(cells[index]) for name, index in self.columns.items()}

    def description(self, kind: str) -> dict:
        used = {self.header[i] for i in self.columns.values()}
        # No file name: clinics name exports after patients, and the manifest travels with the shards.
        return {"kind": kind, "columns_used": sorted(used),
                "columns_ignored": sorted(set(self.header) - used)}


def open_csv(csv_path: Path, required: tuple[str, ...] = REQUIRED) -> CsvTable:
    """Open a clinical CSV and map its header (see `map_columns`).

    Raises:
        IngestError: an unreadable or empty header, or missing or doubled columns.
    """
    raw = csv_path.read_bytes()
    # surrogateescape keeps going past bad bytes so the row that holds them can be named and skipped.
    text = raw.decode("utf-8-sig", errors="surrogateescape")
    csv.field_size_limit(CSV_FIELD_LIMIT)
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, [])
    except csv.Error as exc:
        raise IngestError(f"{csv_path} line 1: not a readable CSV header ({exc})") from None
    if not any(name.strip() for name in header):
        raise IngestError(f"{csv_path}: empty file, expected a header row")
    return CsvTable(csv_path, header, map_columns(header, csv_path, required), reader)


def read_code_release(path: Path, salt: str, parser: LabelParser) -> tuple[Iterator[SourceItem | Skip], dict]:
    """Open a release and return (items, source description for the manifest)."""
    release = locate_release(path)
    table = open_csv(release.csv_path)
    description = {**table.description("code_release"), "patient_grouping": True}
    return _items(table, release, salt, parser), description


def _items(table: CsvTable, release: CodeRelease, salt: str, parser: LabelParser) -> Iterator[SourceItem | Skip]:
    seen: set[str] = set()
    for row in table.rows():
        yield row if isinstance(row, Skip) else _row_to_item(*row, table, release, salt, parser, seen)


def _row_to_item(where: str, cells: dict[str, str], table: CsvTable, release, salt, parser, seen
                 ) -> SourceItem | Skip:
    def cell(name: str) -> str:
        return cells.get(name, "")

    header, columns = table.header, table.columns
    checkup_id, patient_id = cell("checkup_id"), cell("patient_id")
    if not checkup_id or not patient_id:
        return Skip("missing_identifier", f"{where}: empty checkup_id or patient_id")
    if checkup_id in seen:
        return Skip(DUPLICATE, f"{where}: checkup_id seen in an earlier row")
    seen.add(checkup_id)
    anomalies = cell("anomalies_en")
    if not anomalies:
        return Skip(EMPTY_DIAGNOSIS, f"{where}: empty {header[columns['anomalies_en']]!r}")
    labels = parser.stated_labels(anomalies)  # affirmed only: "caries; no gingivitis" is [caries]
    if labels is None and not parser.read(anomalies).named:
        return Skip(UNRECOGNISED_DIAGNOSIS, f"{where}: no known condition in {header[columns['anomalies_en']]!r}")
    paths, modalities = [], []
    for column, folder, modality in (
        ("photographs", release.photo_dir, "photograph"),
        ("radiographs", release.radiograph_dir, "radiograph"),
    ):
        for name in file_names(cell(column)):
            path = resolve_inside(folder, name, release.root)
            if path is None:
                return Skip(IMAGE_OUTSIDE_SOURCE, f"{where}: {column} entry {name!r} points outside {folder} or "
                                                  f"outside the release folder {release.root}")
            paths.append(path)
            modalities.append(modality)
    checkup = Checkup(
        key=pseudonym(salt, "checkup", checkup_id),
        patient=pseudonym(salt, "patient", patient_id),
        modalities=modalities,
        info={name: cell(name) for name in INFO_FIELDS if cell(name)},
        report={name: cell(name) for name in REPORT_SECTIONS if cell(name)},
        labels=labels or [],
        labelled=labels is not None,  # only uncertain conditions ("suspected caries"): unknown, not "none"
    )
    return SourceItem(where=where, checkup=checkup, image_paths=paths)


def file_names(cell: str) -> list[str]:
    """Image file names of a cell: separated by commas, semicolons or line breaks."""
    return [name.strip() for name in re.split(r"[,;\n]", cell) if name.strip()]


def column_key(name: str) -> str:
    """A header name compared loosely: lower case, runs of other characters as one underscore."""
    return re.sub(r"[^a-z0-9]+", "_", name.strip().lower()).strip("_")
