"""Read an offline W&B run file (``run-<id>.wandb``) without a W&B server: its summary and history keys,
and the tables it logged. The file is LevelDB's log format (32 KiB blocks of records with a 7-byte
header: CRC, length, type) after a 7-byte W&B header, each record one `wandb_internal_pb2.Record`."""

from __future__ import annotations

import json
import struct
from pathlib import Path

BLOCK = 32768
HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: Path):
    """The protobuf records of an offline run file, in order."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", "not a W&B run file"
    position, pending = HEADER, b""
    while position + HEADER <= len(data):
        room = BLOCK - position % BLOCK
        if room < HEADER:  # block trailer: zero padding
            position += room
            continue
        length, kind = struct.unpack("<HB", data[position + 4:position + 7])
        if length == 0 and kind == 0:
            break
        chunk = data[position + HEADER:position + HEADER + length]
        position += HEADER + length
        pending = chunk if kind in (FULL, FIRST) else pending + chunk
        if kind in (FULL, LAST):
            record = pb.Record()
            record.ParseFromString(pending)
            yield record


def run_contents(run_folder: Path) -> dict:
    """{"summary": {key: value}, "history_keys": set, "tables": {key: table json}, "images": {key: path}}
    of an offline run folder (nested summary values are flattened to ``a/b/c`` keys)."""
    [path] = Path(run_folder).glob("run-*.wandb")
    summary, history = {}, set()
    for record in records(path):
        kind = record.WhichOneof("record_type")
        items = record.summary.update if kind == "summary" else record.history.item if kind == "history" else []
        for item in items:
            key = item.key or "/".join(item.nested_key)
            if kind == "summary":
                summary[key] = json.loads(item.value_json) if item.value_json else None
            else:
                history.add(key)
    files = Path(run_folder) / "files"
    kinds = {key[: -len("/_type")]: value for key, value in summary.items() if key.endswith("/_type")}
    tables = {key: json.loads((files / summary[f"{key}/path"]).read_text()) for key, kind in kinds.items()
              if kind == "table-file"}
    images = {key: files / summary[f"{key}/path"] for key, kind in kinds.items() if kind == "image-file"}
    return {"summary": summary, "history_keys": history, "tables": tables, "images": images}
