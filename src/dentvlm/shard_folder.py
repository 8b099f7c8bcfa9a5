"""The output folder of `dentvlm shard`: build beside it, swap in when complete, touch nothing else.

A rebuild must never leave the user with less than they had: the new shards are written to a hidden
folder inside the target (the same file system even when the target is a mount point, so moving them
in is a rename), and only a complete build replaces the old one. Replacing deletes exactly the files
the old manifest lists, never any other file in the folder (a README, a user's backup tar), and only
once their replacements are in place.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

from dentvlm.folder_swap import swap_in
from dentvlm.ingest.common import IngestError
from dentvlm.permissions import follow_umask

MANIFEST = "manifest.json"
# What `dentvlm shard` writes: `<split>-NNNNNN.tar`. Manifests are untrusted; names outside this
# pattern (paths, other files) are never read or deleted.
SHARD_NAME = re.compile(r"^[a-z]+-\d{6}\.tar$")
BUILD_PREFIX = ".{name}.building-"
PREVIOUS_PREFIX = ".{name}.previous-"  # old files moved aside while the new ones move in
HIDDEN_PREFIXES = (BUILD_PREFIX.format(name=""), PREVIOUS_PREFIX.format(name=""))  # ours, inside `out`


def listed_shards(manifest: dict, where: str) -> list[str]:
    """The shard file names a manifest lists, checked to be plain shard names.

    Raises:
        ValueError: the manifest is not shaped like one, or lists a name that is not a shard file name.
    """
    try:
        names = [shard["file"] for split in manifest["splits"].values() for shard in split["shards"]]
    except (KeyError, TypeError, AttributeError):
        raise ValueError(f"{where}: manifest has no readable splits/shards list") from None
    bad = [n for n in names if not isinstance(n, str) or not SHARD_NAME.match(n)]
    if bad:
        raise ValueError(f"{where}: manifest lists {bad[:3]}, not shard file names like train-000000.tar")
    return names


class BuildFolder:
    """Context manager: a hidden build folder; `publish()` swaps the build in.

    Checks `out` first (before any work): a folder with a manifest needs `overwrite`, and then its
    manifest must be readable (it says what may be deleted); any other non-empty folder is refused.
    The build is made inside `out` when it exists (a data volume mounted at `out` is another file
    system than its parent: only renames inside it are certain to work), else beside it. On an
    exception the build folder is removed and `out` is as it was.
    """

    def __init__(self, out: Path, overwrite: bool):
        self.out = out
        self.old_files: list[str] = []
        self.path: Path | None = None
        if out.exists() and not out.is_dir():
            raise IngestError(f"{out}: exists and is not a folder")
        if out.is_dir():
            self.old_files = self._old_files(overwrite)

    def _old_files(self, overwrite: bool) -> list[str]:
        out = self.out
        entries = {p.name for p in out.iterdir() if not p.name.startswith(HIDDEN_PREFIXES)}
        if MANIFEST not in entries:
            others = sorted(e for e in entries if e != "README.md")
            if others:
                raise IngestError(f"{out}: not a shard folder (holds {others[:5]} and no {MANIFEST}); choose an "
                                  "empty or new folder")
            return []
        if not overwrite:
            raise IngestError(f"{out}: already holds shards; pass --overwrite true to replace them")
        where = str(out / MANIFEST)
        try:
            manifest = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
            names = listed_shards(manifest, where)
        except (ValueError, RecursionError, UnicodeDecodeError) as exc:
            raise IngestError(f"{where}: cannot tell which files are shards ({exc}); move the folder away or "
                              "delete its shards yourself") from None
        # A shard-named file the old manifest does not list is not ours to overwrite.
        strangers = sorted(e for e in entries if SHARD_NAME.match(e) and e not in names)
        if strangers:
            raise IngestError(f"{out}: holds {strangers[:3]}, which its {MANIFEST} does not list; move them away "
                              "(--overwrite replaces only the files the manifest lists)")
        return [*names, MANIFEST]

    def __enter__(self) -> Path:
        home = self.out if self.out.is_dir() else self.out.absolute().parent
        home.mkdir(parents=True, exist_ok=True)
        leftovers = sorted(p.name for p in home.iterdir() if p.name.startswith(self._prefixes()))
        if leftovers:
            print(f"dentvlm shard: note: {home} holds {leftovers[:3]} from an interrupted build; delete them "
                  "when no other build runs", file=sys.stderr)
        self.path = Path(tempfile.mkdtemp(prefix=self._prefixes()[0], dir=home))
        return self.path

    def _prefixes(self) -> tuple[str, str]:
        inside = self.out.is_dir()
        name = "" if inside else self.out.name
        return BUILD_PREFIX.format(name=name), PREVIOUS_PREFIX.format(name=name)

    def __exit__(self, exc_type, exc, tb) -> None:
        if self.path is not None and self.path.exists():
            shutil.rmtree(self.path, ignore_errors=True)

    def publish(self) -> None:
        """Move the complete build into `out`. Old files are first moved aside (renames, inside `out`),
        then the new shards moved in, the new manifest last; only then are the old files deleted. A
        failure on the way moves everything back: the folder never holds a manifest that does not
        describe its shards, and nothing old is deleted before its replacement is in place."""
        built = sorted(p.name for p in self.path.iterdir())
        if MANIFEST not in built:
            raise RuntimeError(f"{self.path}: build has no {MANIFEST}")  # a bug: build_shards writes it
        follow_umask(self.path)  # mkdtemp made it 0700
        if not self.out.exists():
            os.replace(self.path, self.out)
            return
        swap_in(self.out, self.path, [*(n for n in built if n != MANIFEST), MANIFEST],  # the manifest last
                [MANIFEST, *self.old_files], self._prefixes()[1])
        self.path.rmdir()
