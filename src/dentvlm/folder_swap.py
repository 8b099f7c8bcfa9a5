"""Replacing a command's own files in a folder without ever losing the old ones before the new ones are in
place: shared by `dentvlm shard` (shards and manifest) and `dentvlm predict` (predictions and marker)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path


def swap_in(out: Path, staging: Path, new: list[str], old: list[str], aside_prefix: str) -> None:
    """Move the files `new` (in this order: the one that vouches for the others last) from `staging` into
    `out`, replacing the files `old` (in this order: the one that vouches first) that are there.

    Old files are first moved aside into a hidden folder inside `out` (renames on one file system, whatever is
    mounted where), then the new ones moved in; only then are the old ones deleted. A failure on the way
    moves everything back, so `out` never mixes old and new files.
    """
    present = [name for name in dict.fromkeys(old) if (out / name).exists()]
    aside = Path(tempfile.mkdtemp(prefix=aside_prefix, dir=out))
    moved_aside, moved_in = [], []
    try:
        for name in present:
            os.replace(out / name, aside / name)
            moved_aside.append(name)
        for name in new:
            os.replace(staging / name, out / name)
            moved_in.append(name)
    except BaseException:
        for name in moved_in:
            (out / name).unlink(missing_ok=True)
        for name in moved_aside:
            os.replace(aside / name, out / name)
        aside.rmdir()
        raise
    shutil.rmtree(aside)
