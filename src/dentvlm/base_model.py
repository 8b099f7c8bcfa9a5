"""Which base model a checkpoint was trained on, recognised wherever it now lies.

A checkpoint folder records its base model's folder *and* its identity: the SHA-256 of the model's
`config.json` (architecture, sizes, vocabulary, special token ids), without the keys that only say where
or by which library version it was saved. A copy moved to another folder has the same identity and is
accepted; a different model (another size, family or vocabulary) is refused,
since an adapter loaded onto it would answer nonsense or not load at all.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

# Keys that say where or with what a config was saved, not what the model is.
NOT_IDENTITY = ("_name_or_path", "transformers_version", "_commit_hash")


def identity(folder: Path) -> dict:
    """{"config_sha256", "model_type", "folder_name"} of a Hugging Face model folder."""
    config = json.loads((Path(folder) / "config.json").read_text(encoding="utf-8"))
    kept = {k: v for k, v in config.items() if k not in NOT_IDENTITY}
    digest = hashlib.sha256(json.dumps(kept, sort_keys=True).encode()).hexdigest()
    return {"config_sha256": digest, "model_type": config.get("model_type"), "folder_name": Path(folder).name}


def different_model(folder: Path, expected: dict | None) -> str | None:
    """None when the model in `folder` is the one `expected` (a recorded `identity`) describes, or nothing was
    recorded; else what was recorded, for an error message."""
    if not expected or identity(folder)["config_sha256"] == expected.get("config_sha256"):
        return None
    return f"a {expected.get('model_type')} model from a folder named {expected.get('folder_name')!r}"


def base_model_folder(description: dict, where: Path, override: str | None = None) -> str:
    """The folder of the base model a checkpoint folder's `description` (its dentvlm.json) names: `override`
    when given, else the recorded folder, else (for the embedded tiny model) the tiny model built here.

    Raises:
        FileNotFoundError: the base model is not where it was recorded and no `override` was given.
        ValueError: the folder found is not the model the checkpoint was trained on.
    """
    from dentvlm.model.build import TINY, resolve_model_path

    recorded = description.get("base_model")
    expected = description.get("base_model_identity")
    if override is not None:
        candidate = override
    elif recorded and Path(recorded).is_dir():
        candidate = recorded
    elif description.get("model_hparams", {}).get("model_path") == TINY:
        candidate = TINY  # rebuilt on first use, wherever the cache now is
    else:
        raise FileNotFoundError(f"{where / 'dentvlm.json'}: base model {recorded!r} is not there any more; pass "
                                "--base_model <folder of that model> (a moved copy is recognised by its config)")
    folder = resolve_model_path(candidate)
    recorded_model = different_model(folder, expected)
    if recorded_model:
        raise ValueError(f"{folder}: not the base model this checkpoint was trained on ({where / 'dentvlm.json'} "
                         f"records {recorded_model} whose config.json differs); point --base_model at that model")
    return str(folder)
