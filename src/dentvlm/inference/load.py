"""Load what `dentvlm serve` and `dentvlm predict` answer with: a checkpoint (``x.ckpt`` or its folder), an
adapter or merged export, or any Hugging Face vision-language model folder ("tiny" included).

A checkpoint's LoRA adapter stays unmerged, so the model computes exactly what `dentvlm test` computed
in-process (a merged weight rounds differently); serve a merged export with vLLM for throughput.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from dentvlm.checkpointing import DESCRIPTION
from dentvlm.labels import DEFAULT_CLASSES


@dataclass
class InferenceModel:
    """A model ready to generate, with what its folder says about how it was trained.

    Attributes:
        network: The Hugging Face model to call (LoRA layers inside it for an adapter), in eval mode.
        processor: Its processor (tokenizer, image processor, chat template).
        source: The folder it was loaded from ("tiny": the tiny model's folder).
        description: The folder's ``dentvlm.json`` (base model, task, fine-tuning settings), or {}.
        classes: The label vocabulary (``labels.json``), or the default six without one.
        data: The training run's ``data:`` settings (``config.yaml``), or {}.
    """

    network: torch.nn.Module
    processor: object
    source: Path
    description: dict = field(default_factory=dict)
    classes: tuple[str, ...] = DEFAULT_CLASSES
    data: dict = field(default_factory=dict)

    @property
    def max_new_tokens(self) -> int:
        """The training run's generation limit (model.max_new_tokens), else 128."""
        return int(self.description.get("model_hparams", {}).get("max_new_tokens") or 128)


def model_folder(path: str | Path) -> Path:
    """The folder that `path` names: a checkpoint file's folder beside it, or the folder itself."""
    from dentvlm.export import checkpoint_folder
    from dentvlm.model.build import TINY, resolve_model_path

    if str(path) == TINY:
        return resolve_model_path(TINY)
    given = Path(path)
    if given.suffix == ".ckpt" or (given.is_dir() and (given / DESCRIPTION).is_file()
                                   and not (given / "config.json").is_file()):
        return checkpoint_folder(given)
    if not given.exists():
        raise FileNotFoundError(f"{path}: no such checkpoint, export or model folder")
    return resolve_model_path(str(given))


def load_for_inference(path: str | Path, dtype: str = "auto", attn_implementation: str = "sdpa",
                       device: str | torch.device = "cpu") -> InferenceModel:
    """Load `path` (see `model_folder`) on `device`, in eval mode.

    Raises:
        FileNotFoundError: `path` or a file it needs (the base model of an adapter) is missing.
        ValueError: the folder is incomplete or its adapter does not fit its base model.
    """
    from dentvlm.export import check_checkpoint_folder, load_adapter
    from dentvlm.model.build import load_vlm
    from dentvlm.model.fast_paths import apply_fast_paths

    folder = model_folder(path)
    description = read_json(folder / DESCRIPTION)
    if (folder / "adapter_config.json").is_file():
        description = check_checkpoint_folder(folder)  # every file there and readable
        base = load_vlm(description["base_model"], dtype, attn_implementation)
        network = load_adapter(base, folder).get_base_model()  # LoRA layers live inside the base model
    else:
        network = load_vlm(str(folder), dtype, attn_implementation)
    apply_fast_paths(network)
    network.to(device).eval()
    labels = read_json(folder / "labels.json").get("classes") or description.get("classes")
    return InferenceModel(network=network, processor=folder_processor(folder), source=folder,
                          description=description, classes=tuple(labels or DEFAULT_CLASSES),
                          data=run_data_settings(folder))


def folder_processor(folder: Path):
    """The processor saved in `folder` (checkpoint folders hold one without a model config)."""
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(folder)


def context_length(folder: Path) -> int:
    """The longest sequence the model of `folder` takes (an adapter's: its base model's)."""
    from dentvlm.model.build import model_context_length

    if (folder / "adapter_config.json").is_file():
        return model_context_length(read_json(folder / DESCRIPTION).get("base_model", str(folder)))
    return model_context_length(str(folder))


def run_data_settings(folder: Path) -> dict:
    """The ``data:`` section of the run config saved with a checkpoint ({} without one)."""
    import yaml

    path = folder / "config.yaml"
    if not path.is_file():
        return {}
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not readable YAML ({type(exc).__name__})") from None
    data = config.get("data") if isinstance(config, dict) else None
    return data if isinstance(data, dict) else {}


def read_json(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not readable JSON ({type(exc).__name__})") from None
    return value if isinstance(value, dict) else {}
