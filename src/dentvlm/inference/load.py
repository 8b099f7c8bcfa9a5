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
        autocast: The dtype the run's mixed precision computed in (bf16-mixed: bfloat16), for generation
            to compute as `dentvlm test` did; None for full precision.
        base: The base model folder an adapter was loaded onto (None: `source` is a whole model).
    """

    network: torch.nn.Module
    processor: object
    source: Path
    description: dict = field(default_factory=dict)
    classes: tuple[str, ...] = DEFAULT_CLASSES
    data: dict = field(default_factory=dict)
    autocast: torch.dtype | None = None
    base: str | None = None

    @property
    def context_len(self) -> int:
        """The longest sequence the model takes (an adapter's: its base model's)."""
        from dentvlm.model.build import model_context_length

        return model_context_length(self.base or str(self.source))

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


def load_for_inference(path: str | Path, dtype: str = "auto", attn_implementation: str | None = None,
                       device: str | torch.device = "cpu", base_model: str | None = None) -> InferenceModel:
    """Load `path` (see `model_folder`) on `device`, in eval mode.

    A checkpoint (base model + unmerged adapter) computes as the training run's `dentvlm test` did: its
    weight dtype (`dtype` auto), its attention implementations (`attn_implementation` None) and its mixed
    precision (autocast; see `InferenceModel.autocast`). A merged or full model folder computes in the dtype
    its weights were saved in, without autocast: a float32 merge exists to keep a small LoRA update that
    bfloat16 would round away. Flash attention falls back to sdpa where it cannot run (a CPU, no flash-attn).
    An adapter's base model is found by `dentvlm.base_model.base_model_folder` (`base_model`: its folder
    when it moved).

    Raises:
        FileNotFoundError: `path` or a file it needs (the base model of an adapter) is missing.
        ValueError: the folder is incomplete or its adapter does not fit its base model.
    """
    from dentvlm.base_model import base_model_folder
    from dentvlm.export import check_checkpoint_folder, load_adapter
    from dentvlm.model.build import attention, load_vlm
    from dentvlm.model.fast_paths import apply_fast_paths

    folder = model_folder(path)
    description = read_json(folder / DESCRIPTION)
    adapter = (folder / "adapter_config.json").is_file()
    run = run_settings(folder, "model") if adapter else {}
    if dtype == "auto" and run.get("dtype") in ("float32", "bfloat16", "float16"):
        dtype = run["dtype"]
    if attn_implementation is None:
        attn_implementation = attention(runnable(run.get("attn_implementation") or "sdpa", device),
                                        runnable(run.get("vision_attn_implementation"), device))
    if adapter:
        description = check_checkpoint_folder(folder)  # every file there and readable
        base = base_model_folder(description, folder, base_model)
        network = load_adapter(load_vlm(base, dtype, attn_implementation), folder).get_base_model()  # LoRA inside
    else:
        base = None
        network = load_vlm(str(folder), dtype, attn_implementation)
    apply_fast_paths(network)
    network.to(device).eval()
    labels = read_json(folder / "labels.json").get("classes") or description.get("classes")
    return InferenceModel(network=network, processor=folder_processor(folder), source=folder,
                          description=description, classes=tuple(labels or DEFAULT_CLASSES),
                          data=run_data_settings(folder),
                          autocast=autocast_dtype(run_settings(folder, "trainer")) if adapter else None, base=base)


def runnable(implementation: str | None, device: str | torch.device) -> str | None:
    """`implementation`, or sdpa for a flash attention that cannot run here (a CPU, flash-attn missing)."""
    import importlib.util

    if not implementation or not implementation.startswith("flash_attention"):
        return implementation
    if torch.device(device).type != "cuda" or importlib.util.find_spec("flash_attn") is None:
        return "sdpa"
    return implementation


def folder_processor(folder: Path):
    """The processor saved in `folder` (checkpoint folders hold one without a model config)."""
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(folder)


def context_length(folder: Path, base_model: str | None = None) -> int:
    """The longest sequence the model of `folder` takes (an adapter's: its base model's)."""
    from dentvlm.base_model import base_model_folder
    from dentvlm.model.build import model_context_length

    if (folder / "adapter_config.json").is_file():
        return model_context_length(base_model_folder(read_json(folder / DESCRIPTION), folder, base_model))
    return model_context_length(str(folder))


def run_data_settings(folder: Path) -> dict:
    """The ``data:`` section of the run config saved with a checkpoint ({} without one)."""
    return run_settings(folder, "data")


def run_settings(folder: Path, section: str) -> dict:
    """One section (data, model, trainer) of the run config saved with a checkpoint ({} without one)."""
    import yaml

    path = folder / "config.yaml"
    if not path.is_file():
        return {}
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not readable YAML ({type(exc).__name__})") from None
    settings = config.get(section) if isinstance(config, dict) else None
    return settings if isinstance(settings, dict) else {}


# Lightning precision settings that compute under autocast, and the dtype they autocast to.
MIXED_PRECISION = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16, "16": torch.float16,
                   "bf16": torch.bfloat16}


def autocast_dtype(trainer: dict) -> torch.dtype | None:
    """The autocast dtype of the run's trainer.precision (None: the weights' own dtype, as 32-true)."""
    return MIXED_PRECISION.get(str(trainer.get("precision")))


def read_json(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not readable JSON ({type(exc).__name__})") from None
    return value if isinstance(value, dict) else {}
