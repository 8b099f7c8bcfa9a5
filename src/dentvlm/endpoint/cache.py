"""The on-disk response cache of endpoint evaluation: one JSON file per request, keyed by the SHA-256 of
the request (URL, model, messages with their images, decoding settings), written atomically. A run that
was interrupted finds its answers here and asks only for the rest.

Files hold the answer and its token counts, never the request (which holds patient images).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path


def request_key(base_url: str, body: dict) -> str:
    """SHA-256 of the request: equal requests to the same API share an answer."""
    canonical = json.dumps({"base_url": base_url, "body": body}, sort_keys=True, ensure_ascii=False,
                           separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class ResponseCache:
    """Answers by request key under `folder` (created on first write)."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)

    def _path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict | None:
        """The stored answer, or None (missing, or unreadable: a damaged entry is asked again)."""
        path = self._path(key)
        try:
            value = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return None
        return value if isinstance(value, dict) and isinstance(value.get("text"), str) else None

    def put(self, key: str, answer: dict) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, partial = tempfile.mkstemp(dir=path.parent, prefix=f".{key[:8]}-", suffix=".partial")
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as out:
                json.dump(answer, out, ensure_ascii=False)
            os.replace(partial, path)  # a killed run leaves no half-written answer
        except BaseException:
            Path(partial).unlink(missing_ok=True)
            raise
