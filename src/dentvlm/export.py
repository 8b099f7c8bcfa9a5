"""`dentvlm export`: a checkpoint folder -> a folder that plain transformers (+ peft) loads.

- adapter: ``adapter_model.safetensors`` + ``adapter_config.json`` + processor files; load with
  ``PeftModel.from_pretrained(AutoModelForImageTextToText.from_pretrained(base), folder)``.
  Fully trained modules (vision tower, merger, extra modules) travel inside the adapter as peft
  ``modules_to_save``, so nothing trained is lost.
- merged: the adapter folded into the base weights; load with
  ``AutoModelForImageTextToText.from_pretrained(folder)`` and ``AutoProcessor.from_pretrained(folder)``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from dentvlm.checkpointing import DESCRIPTION, sidecar_dir

ADAPTER_FILES = ("adapter_model.safetensors", "adapter_config.json")
CARRIED_FILES = ("labels.json", "config.yaml", DESCRIPTION)


def checkpoint_folder(checkpoint: str | Path) -> Path:
    """The self-describing folder of a checkpoint given as ``x.ckpt`` or as the folder ``x``."""
    path = Path(checkpoint)
    folder = path if path.is_dir() and (path / DESCRIPTION).is_file() else sidecar_dir(path)
    if not (folder / DESCRIPTION).is_file():
        raise FileNotFoundError(f"{checkpoint}: no checkpoint folder with {DESCRIPTION} (expected beside the .ckpt)")
    return folder


def export_checkpoint(checkpoint: str | Path, out: str | Path, merge: bool = False, dtype: str = "auto") -> Path:
    """Write the adapter (or, with `merge`, the merged model) of `checkpoint` to `out`."""
    from transformers import AutoProcessor

    folder = checkpoint_folder(checkpoint)
    description = json.loads((folder / DESCRIPTION).read_text())
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out}: not empty; choose a new folder")
    out.mkdir(parents=True, exist_ok=True)
    processor = AutoProcessor.from_pretrained(folder)
    if description["finetune"] == "full" or not merge:
        _copy_trained_files(folder, out, description)
    else:
        merged = merged_model(folder, description["base_model"], dtype)
        merged.save_pretrained(out)
    processor.save_pretrained(out)
    for name in CARRIED_FILES:
        if (folder / name).is_file():
            shutil.copy2(folder / name, out / name)
    return out


def merged_model(folder: Path, base_model: str, dtype: str = "auto"):
    """The base model with the folder's adapter merged in (a plain transformers model)."""
    from peft import PeftModel

    from dentvlm.model.build import load_vlm

    base = load_vlm(base_model, dtype=dtype)
    return PeftModel.from_pretrained(base, folder).merge_and_unload()


def _copy_trained_files(folder: Path, out: Path, description: dict) -> None:
    if description["finetune"] == "full":
        names = [p.name for p in folder.iterdir() if p.suffix == ".safetensors" or p.name.startswith("model.")]
        names += ["config.json", "generation_config.json"]
    else:
        names = list(ADAPTER_FILES)
    for name in names:
        if (folder / name).is_file():
            shutil.copy2(folder / name, out / name)
