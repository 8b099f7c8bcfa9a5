"""The output folder of `dentvlm predict`: written only with predict's own files, replaced only by them.

`--overwrite` replaces the files an earlier `dentvlm predict` wrote into the folder (it leaves a marker
naming them) and never anything else: not the source, not its images, not a note of the user's. The
new files are made in a hidden folder inside the output folder (so moving them in is a rename on the
same file system, whatever is mounted where) and each old file is replaced only once its replacement
is complete.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from dentvlm.folder_swap import swap_in

MARKER = ".dentvlm-predict.json"
PARTIAL = ".dentvlm-predict.partial-"  # staging folders (a killed run may leave one; it is not the user's)
OUTPUTS = ("predictions.jsonl", "summary.json")


def check_output_folder(out: Path, overwrite: bool, protected: list[Path]) -> None:
    """Refuse an output folder that predict may not write (before any model is loaded).

    Args:
        protected: The source and its image folder: the output folder must not contain them.

    Raises:
        FileExistsError: `out` is a file, holds files and `overwrite` is off, or holds files that no
            earlier `dentvlm predict` wrote.
        ValueError: `out` contains the source or its image folder.
    """
    resolved = out.resolve()
    for path in protected:
        if path.resolve() == resolved or path.resolve().is_relative_to(resolved):
            raise ValueError(f"{out}: holds the source or its images ({path}); choose an output folder outside it")
    if not out.exists():
        return
    if not out.is_dir():
        raise FileExistsError(f"{out}: exists and is not a folder")
    entries = [p.name for p in out.iterdir() if not p.name.startswith(PARTIAL)]
    if not entries:
        return
    if not overwrite:
        raise FileExistsError(f"{out}: not empty; choose a new folder, or pass --overwrite true to replace what an "
                              "earlier `dentvlm predict` wrote there")
    if MARKER not in entries:
        raise FileExistsError(f"{out}: holds files that `dentvlm predict` did not write ({sorted(entries)[:3]}); "
                              "--overwrite replaces only an earlier prediction's own files: choose a new folder")


class OutputFolder:
    """Context manager: a staging folder inside `out` for predict's files; `publish()` moves them in."""

    def __init__(self, out: Path):
        self.out = out
        self.staging: Path | None = None
        self.created = not out.exists()

    def __enter__(self) -> Path:
        self.out.mkdir(parents=True, exist_ok=True)
        self.staging = Path(tempfile.mkdtemp(prefix=PARTIAL, dir=self.out))
        return self.staging

    def __exit__(self, *exc_info) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)
        if self.created and not any(self.out.iterdir()):  # a failed first run leaves no empty folder
            self.out.rmdir()

    def publish(self) -> None:
        """Predict's files replace their old versions (see `swap_in`); the marker, which names them, last."""
        marker = self.staging / MARKER
        marker.write_text(json.dumps({"written_by": "dentvlm predict", "files": list(OUTPUTS)}) + "\n")
        swap_in(self.out, self.staging, [*OUTPUTS, MARKER], [MARKER, *OUTPUTS], PARTIAL)
