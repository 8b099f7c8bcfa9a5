"""What every source reader yields: a checkup with the paths of its images, or a counted skip."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from dentvlm.records import Checkup

# Row-level skip reasons (image-level reasons live in dentvlm.ingest.images).
EMPTY_DIAGNOSIS = "empty_diagnosis"
UNRECOGNISED_DIAGNOSIS = "unrecognised_diagnosis"
NON_UTF8 = "non_utf8_text"
DUPLICATE = "duplicate_checkup"
IMAGE_COUNT_MISMATCH = "image_count_mismatch"
BAD_ENTRY = "bad_entry"
MALFORMED_ROW = "malformed_row"
IMAGE_OUTSIDE_SOURCE = "image_outside_source"


class IngestError(ValueError):
    """Bad input that stops ingestion (always, or under --strict); the message names file and row."""


@dataclass
class SourceItem:
    """A checkup read from a source, before its images are prepared.

    Attributes:
        where: Human-readable location for error messages (file and row); never stored in shards.
        checkup: The record, already pseudonymised; `modalities` matches `image_paths`.
        image_paths: Source image files, in order.
    """

    where: str
    checkup: Checkup
    image_paths: list[Path]


@dataclass
class Skip:
    """A source entry that cannot be used, with the manifest reason and a message naming it."""

    reason: str
    message: str


def clean_text(value: str) -> str:
    """Unify line endings and trim; text fields keep their inner line breaks."""
    return re.sub(r"\r\n?", "\n", value).strip()


def has_undecodable_bytes(value: str) -> bool:
    """True for text decoded with `surrogateescape` that held bytes that are not UTF-8."""
    return any("\udc80" <= ch <= "\udcff" for ch in value)


def resolve_inside(root: Path, name: str, boundary: Path | None = None) -> Path | None:
    """`root/name` with every symlink resolved, or None when that lands outside `root` or outside
    `boundary` (default: `root`), or the name is unusable (untrusted file names: ``../x``, absolute paths,
    symlinks out, NUL bytes, loops).

    `boundary` is the folder the user named (a release or export folder): an image folder inside it
    that is itself a symlink to somewhere else (``Images/Photographs -> /elsewhere``) would make `root`
    resolve outside it, so containment in the resolved `root` alone would let those files in.

    Whether the result is a regular file is checked when it is opened (`ingest.images.read_source_file`).
    """
    try:
        path = (root / name).resolve()
        folders = [root.resolve()] + ([boundary.resolve()] if boundary is not None else [])
        inside = all(path.is_relative_to(folder) and path != folder for folder in folders)
    except (OSError, RuntimeError, ValueError):  # symlink loop (RuntimeError before 3.13), NUL byte
        return None
    return path if inside else None
