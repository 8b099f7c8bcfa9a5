"""`dentvlm export`: a checkpoint folder -> a folder that plain transformers (+ peft) loads.

- adapter: ``adapter_model.safetensors`` + ``adapter_config.json`` + processor files; load with
  ``PeftModel.from_pretrained(AutoModelForImageTextToText.from_pretrained(base), folder)``.
  Fully trained modules (vision tower, merger, extra modules) travel inside the adapter as peft
  ``modules_to_save``, so nothing trained is lost.
- merged: the adapter folded into the base weights; load with
  ``AutoModelForImageTextToText.from_pretrained(folder)`` and ``AutoProcessor.from_pretrained(folder)``.

The checkpoint folder is checked complete before anything is written, the export is written to a
hidden folder beside `out`, loaded back (every weight accounted for), and only then renamed to `out`:
a failed export leaves nothing that looks like a model.
"""

from __future__ import annotations

import gc
import json
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from dentvlm.checkpointing import DESCRIPTION, sidecar_dir
from dentvlm.permissions import follow_umask

if TYPE_CHECKING:
    import torch

ADAPTER_FILES = ("adapter_model.safetensors", "adapter_config.json")
CARRIED_FILES = ("labels.json", "config.yaml", DESCRIPTION)
# Largest share of the fine-tuning's effect on the logits that a merged export may lose (see merge_check).
MAX_MERGE_ERROR = 0.05
# Either name, depending on the transformers version that saved the processor (which must also load).
PROCESSOR_FILES = (("processor_config.json", "preprocessor_config.json"),)


def checkpoint_folder(checkpoint: str | Path) -> Path:
    """The self-describing folder of a checkpoint given as ``x.ckpt`` or as the folder ``x``."""
    path = Path(checkpoint)
    folder = path if path.is_dir() and (path / DESCRIPTION).is_file() else sidecar_dir(path)
    if not (folder / DESCRIPTION).is_file():
        raise FileNotFoundError(f"{checkpoint}: no checkpoint folder with {DESCRIPTION} (expected beside the .ckpt)")
    return folder


def check_checkpoint_folder(folder: Path) -> dict:
    """The folder's description, after checking every file an export needs is there and readable.

    Raises:
        FileNotFoundError: files are missing (named).
        ValueError: the description or a weights file is unreadable.
    """
    try:
        description = json.loads((folder / DESCRIPTION).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ValueError(f"{folder / DESCRIPTION}: not readable JSON ({type(exc).__name__})") from None
    if not isinstance(description, dict) or description.get("finetune") not in ("lora", "full") \
            or not isinstance(description.get("base_model"), str):
        raise ValueError(f"{folder / DESCRIPTION}: needs 'finetune' (lora or full) and 'base_model'")
    weights = list(ADAPTER_FILES) if description["finetune"] == "lora" else ["config.json", _full_weights(folder)]
    missing = [name for name in weights if not (folder / name).is_file()]
    missing += [" or ".join(names) for names in PROCESSOR_FILES if not any((folder / n).is_file() for n in names)]
    if missing:
        raise FileNotFoundError(f"{folder}: incomplete checkpoint folder, missing {', '.join(missing)}; export the "
                                "folder of a checkpoint that finished saving (e.g. checkpoints/last)")
    for path in sorted(folder.glob("*.safetensors")):
        _check_safetensors(path)
    _check_processor(folder)
    return description


def export_checkpoint(checkpoint: str | Path, out: str | Path, merge: bool = False, dtype: str = "auto",
                      verify: bool = True, max_merge_error: float = MAX_MERGE_ERROR, base_model: str | None = None
                      ) -> Path:
    """Write the adapter (or, with `merge`, the merged model) of `checkpoint` to `out`.

    Args:
        dtype: Dtype of merged weights: auto is float32 (the merge is computed in float32; a 16-bit copy
            rounds away much of a small LoRA update, see `dentvlm.merge_check`).
        verify: Load the written folder back (with the base model for an adapter) and check every
            weight arrived, and that a merged model's logits keep the fine-tuning (`max_merge_error`),
            before `out` appears.
        max_merge_error: Largest merge error accepted (`dentvlm.merge_check`).
        base_model: The base model's folder when it is no longer where the checkpoint recorded it
            (checked to be the same model; see `dentvlm.base_model`).

    Raises:
        ValueError: the export does not load, or a merged export loses more than `max_merge_error`.
    """
    from transformers import AutoProcessor

    from dentvlm.base_model import base_model_folder

    folder = checkpoint_folder(checkpoint)
    description = check_checkpoint_folder(folder)
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out}: exists and is not an empty folder; choose a new folder")
    adapter = description["finetune"] == "lora"
    base = base_model_folder(description, folder, base_model) if adapter and (merge or verify) else None
    out.absolute().parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.absolute().parent))
    try:
        if adapter and merge:
            merged = merged_model(folder, base, dtype)
            merged.save_pretrained(staging)
            del merged
            gc.collect()
        else:
            _copy_trained_files(folder, staging, adapter)
            if adapter and base is not None:  # where plain peft will look for the base model
                _point_at_base(staging / "adapter_config.json", base)
        processor = AutoProcessor.from_pretrained(folder)  # loads: checked above
        processor.save_pretrained(staging)
        _generation_settings(description, processor.tokenizer).save_pretrained(staging)
        for name in CARRIED_FILES:
            if (folder / name).is_file():
                shutil.copy2(folder / name, staging / name)
        if verify and adapter and merge:
            _check_merge(staging, folder, base, max_merge_error)  # loads it as users will, then its logits
        elif verify:
            verify_export(staging, base if adapter else None)
        follow_umask(staging)  # mkdtemp made it 0700, safetensors writes 0600
        if out.exists():
            out.rmdir()  # empty, checked above
        staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def merged_model(folder: Path, base_model: str, dtype: str = "auto"):
    """The base model with the folder's adapter merged in (a plain transformers model), in `dtype`
    (auto: float32). The base is loaded in that dtype and the float32 adapter added to it, so each
    weight is rounded once, to `dtype`, after the update is added (not before)."""
    from dentvlm.model.build import load_vlm

    return load_adapter(load_vlm(base_model, dtype="float32" if dtype == "auto" else dtype),
                        folder).merge_and_unload()


def _check_merge(staging: Path, folder: Path, base_model: str, max_merge_error: float) -> None:
    from dentvlm.merge_check import merge_error

    error = merge_error(staging, folder, base_model)
    if error > max_merge_error:
        raise ValueError(f"export check failed: the merged weights lose {100 * error:.1f}% of what the fine-tuning "
                         f"changes in the logits (over --max_merge_error {max_merge_error}); 16-bit weights round "
                         "away small LoRA updates: export with --dtype float32 (the default), or as an adapter")


def _point_at_base(adapter_config: Path, base: str) -> None:
    config = json.loads(adapter_config.read_text(encoding="utf-8"))
    config["base_model_name_or_path"] = base
    adapter_config.write_text(json.dumps(config, indent=2) + "\n")


def _generation_settings(description: dict, tokenizer):
    """dentvlm's greedy generation settings, for every export: a base checkpoint's own (Qwen2.5-VL ships
    sampling and a repetition penalty) would make vLLM or plain `generate` answer otherwise than
    `dentvlm test` scored."""
    from dentvlm.model.generation import generation_config

    hparams = description.get("model_hparams", {})
    return generation_config(int(hparams.get("max_new_tokens") or 128), int(hparams.get("num_beams") or 1), tokenizer)


def load_adapter(base, folder: Path):
    """`PeftModel.from_pretrained(base, folder)`, checking every saved adapter tensor was loaded (peft
    only warns about keys that match no module, and would export or merge without them).

    Raises:
        ValueError: saved tensors that the model has no place for, or that did not load.
    """
    import torch
    from peft import PeftModel
    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import load_file

    try:
        model = PeftModel.from_pretrained(base, folder)
    except RuntimeError as exc:  # shape mismatches
        raise ValueError(f"{folder}: adapter does not fit the base model ({str(exc).splitlines()[0]})") from None
    saved = load_file(folder / "adapter_model.safetensors")
    loaded = get_peft_model_state_dict(model)
    missing = sorted(set(saved) - set(loaded))
    different = sorted(k for k in set(saved) & set(loaded)
                       if not torch.equal(saved[k].to(loaded[k].dtype), loaded[k].detach().cpu()))
    if missing or different:
        raise ValueError(f"{folder / 'adapter_model.safetensors'}: {len(missing) + len(different)} of {len(saved)} "
                         f"tensors do not load into the base model (e.g. {(missing + different)[:2]}); was it "
                         "trained on another base model?")
    return model


def verify_export(folder: Path, base_model: str | None) -> None:
    """Load an export as its users will, and check every saved weight was loaded.

    Args:
        base_model: The base model folder for an adapter export; None for a full model folder.

    Raises:
        ValueError: the folder does not load, or weights are missing, unexpected or of the wrong shape.
    """
    from transformers import AutoProcessor

    from dentvlm.model.build import load_vlm

    if base_model is None:
        model = load_full_export(folder)
    else:
        try:
            AutoProcessor.from_pretrained(folder)
            model = load_adapter(load_vlm(base_model), folder)
        except LOAD_ERRORS as exc:
            raise _not_loading(exc) from None
    del model
    gc.collect()


LOAD_ERRORS = (OSError, ValueError, KeyError, RuntimeError)


def load_full_export(folder: Path, dtype: torch.dtype | None = None):
    """A merged or full model folder loaded as its users will (its processor, then
    `AutoModelForImageTextToText`, in `dtype` or as saved), every saved weight checked to have loaded.

    Raises:
        ValueError: the folder does not load, or weights are missing or of the wrong shape.
    """
    from transformers import AutoModelForImageTextToText, AutoProcessor

    try:
        AutoProcessor.from_pretrained(folder)
        model, info = AutoModelForImageTextToText.from_pretrained(folder, output_loading_info=True,
                                                                  **({"dtype": dtype} if dtype else {}))
    except LOAD_ERRORS as exc:
        raise _not_loading(exc) from None
    problems = {k: v for k, v in info.items() if k in ("missing_keys", "mismatched_keys") and v}
    if problems:
        del model
        gc.collect()
        detail = "; ".join(f"{k}: {list(v)[:3]}" for k, v in problems.items())
        raise ValueError(f"export check failed: weights did not load ({detail})")
    return model


def _not_loading(exc: Exception) -> ValueError:
    return ValueError(f"export check failed: the written folder does not load ({type(exc).__name__}: "
                      f"{str(exc).splitlines()[0] if str(exc) else ''})")


def _full_weights(folder: Path) -> str:
    index = "model.safetensors.index.json"
    return index if (folder / index).is_file() else "model.safetensors"


def _check_safetensors(path: Path) -> None:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            if not list(handle.keys()):
                raise ValueError("no tensors")
    except Exception as exc:  # noqa: BLE001 (safetensors raises its own SafetensorError for a damaged file)
        raise ValueError(f"{path}: not a readable safetensors file ({exc})") from None


def _check_processor(folder: Path) -> None:
    from transformers import AutoProcessor

    try:
        AutoProcessor.from_pretrained(folder)
    except Exception as exc:  # noqa: BLE001 (tokenizer libraries raise many kinds for missing/damaged files)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"{folder}: the processor (tokenizer, image processor) does not load ({first})") from None


def _copy_trained_files(folder: Path, out: Path, adapter: bool) -> None:
    if adapter:
        names = list(ADAPTER_FILES)
    else:
        names = [p.name for p in folder.iterdir() if p.suffix == ".safetensors" or p.name.startswith("model.")]
        names += [n for n in ("config.json", "generation_config.json") if (folder / n).is_file()]
    for name in names:
        shutil.copy2(folder / name, out / name)
