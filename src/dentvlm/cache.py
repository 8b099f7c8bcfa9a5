"""Where dentvlm keeps what it builds once per machine (the tiny model, the WordNet copy)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """``$DENTVLM_CACHE``, else ``~/.cache/dentvlm``."""
    return Path(os.environ.get("DENTVLM_CACHE", Path.home() / ".cache" / "dentvlm"))
