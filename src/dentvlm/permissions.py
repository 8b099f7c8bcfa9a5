"""Output folders readable as the user's umask says: a serving account (vLLM, a container) or a
colleague must be able to read an export, a checkpoint folder or a shard folder.

Files that dentvlm stages in `tempfile.mkdtemp` folders (created 0700) or that safetensors writes
(0600) would otherwise keep those private modes after they are renamed into place."""

from __future__ import annotations

import os
from pathlib import Path


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def follow_umask(folder: Path) -> None:
    """Give `folder`, and every folder and file inside it, the modes a new folder or file gets under the
    current umask (0755 and 0644 under the usual 022)."""
    mask = current_umask()
    for root, _, files in os.walk(folder):
        os.chmod(root, 0o777 & ~mask)
        for name in files:
            path = os.path.join(root, name)
            if not os.path.islink(path):
                os.chmod(path, 0o666 & ~mask)
