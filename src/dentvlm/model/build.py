"""Loading a local Hugging Face vision-language model: the one place that touches HF model classes.

Any model type that the installed transformers maps to `AutoModelForImageTextToText` loads here
(Qwen2-VL, Qwen2.5-VL, Qwen3-VL, ...), so new families need no table of ours. The embedded tiny
model is an ordinary HF folder built on first use, and loads through the same code.
"""

from __future__ import annotations

from pathlib import Path

import torch

TINY = "tiny"
DTYPES = {"auto": "auto", "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
ATTENTION = ("sdpa", "eager", "flash_attention_2", "flash_attention_3")


def resolve_model_path(path: str) -> Path:
    """A model folder for `path`: "tiny" (built on first use) or a local Hugging Face directory."""
    if path == TINY:
        from dentvlm.model.tiny import ensure_tiny_model

        return ensure_tiny_model()
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(
            f"model path {path!r} is not a directory: point model.model_path at a local Hugging Face folder "
            f"(e.g. a downloaded Qwen2.5-VL-7B-Instruct) or use {TINY!r} for the embedded tiny model"
        )
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder}: no config.json, so not a Hugging Face model folder")
    return folder


def check_vision_language(folder: Path, trust_remote_code: bool = False):
    """The model's config, after checking that transformers knows it as an image-text-to-text model."""
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING

    config = AutoConfig.from_pretrained(folder, trust_remote_code=trust_remote_code)
    known = type(config) in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING
    remote = trust_remote_code and "AutoModelForImageTextToText" in (getattr(config, "auto_map", None) or {})
    if not (known or remote):
        raise ValueError(
            f"{folder}: model type {config.model_type!r} is not a vision-language model that transformers can "
            "load with AutoModelForImageTextToText (a text-only LLM, or a newer model than the installed "
            "transformers knows?)"
        )
    return config


def attention(text: str = "sdpa", vision: str | None = None) -> str | dict[str, str]:
    """transformers' `attn_implementation`: one for the whole model, or a different one for the vision
    tower (transformers runs Qwen2.5-VL's vision attention under sdpa/eager as one call per window;
    dentvlm batches sdpa's by window size; flash_attention_2 does each block in one varlen call)."""
    for name, value in (("model.attn_implementation", text), ("model.vision_attn_implementation", vision)):
        if value is not None and value not in ATTENTION:
            raise ValueError(f"{name} must be one of {ATTENTION}, got {value!r}")
    return text if vision in (None, text) else {"": text, "vision_config": vision}


def load_vlm(path: str, dtype: str = "auto", attn_implementation: str | dict = "sdpa", trust_remote_code: bool = False):
    """Load the model of `path` (see `resolve_model_path`) for fine-tuning or evaluation."""
    from transformers import AutoModelForImageTextToText

    if dtype not in DTYPES:
        raise ValueError(f"model.dtype must be one of {list(DTYPES)}, got {dtype!r}")
    if isinstance(attn_implementation, str):
        attention(attn_implementation)  # checks the name
    folder = resolve_model_path(path)
    check_vision_language(folder, trust_remote_code)
    return AutoModelForImageTextToText.from_pretrained(
        folder, dtype=DTYPES[dtype], attn_implementation=attn_implementation, trust_remote_code=trust_remote_code
    )


def build_vlm_without_weights(path: str, dtype: str = "auto", attn_implementation: str | dict = "sdpa",
                              trust_remote_code: bool = False):
    """The architecture of `path` with freshly initialised weights (call under ``torch.device("meta")``
    to get no weights at all): what FSDP2 ranks other than 0 build before rank 0 fills their shards."""
    from transformers import AutoModelForImageTextToText

    folder = resolve_model_path(path)
    config = check_vision_language(folder, trust_remote_code)
    if dtype == "auto":  # as saved (what from_pretrained's "auto" does)
        saved = getattr(config, "dtype", None) or torch.float32
        torch_dtype = getattr(torch, saved) if isinstance(saved, str) else saved
    else:
        torch_dtype = DTYPES[dtype]
    return AutoModelForImageTextToText.from_config(config, dtype=torch_dtype, attn_implementation=attn_implementation,
                                                   trust_remote_code=trust_remote_code)


def model_config(path: str, trust_remote_code: bool = False):
    """The model config saved in `path` (no weights read)."""
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(resolve_model_path(path), trust_remote_code=trust_remote_code)


def model_context_length(path: str, trust_remote_code: bool = False) -> int:
    """The longest sequence the model of `path` takes (its config's max_position_embeddings)."""
    return context_length(model_config(path, trust_remote_code))


def context_length(config) -> int:
    text = getattr(config, "text_config", None) or config
    return int(text.max_position_embeddings)


def load_processor(path: str, trust_remote_code: bool = False):
    """The processor (tokenizer, image processor, chat template) saved with the model."""
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(resolve_model_path(path), trust_remote_code=trust_remote_code)


def vision_module_name(model: torch.nn.Module) -> str | None:
    """Qualified name of the vision tower (Qwen-VL: ``model.visual``), or None if not found."""
    names = dict(model.named_modules())
    for candidate in ("model.visual", "visual", "model.vision_tower", "vision_tower", "model.vision_model"):
        if candidate in names:
            return candidate
    return None


def projector_module_name(model: torch.nn.Module) -> str | None:
    """Qualified name of the vision-to-language projector (Qwen-VL: the merger), or None."""
    names = dict(model.named_modules())
    vision = vision_module_name(model)
    for candidate in (f"{vision}.merger", "model.multi_modal_projector", "multi_modal_projector"):
        if candidate in names:
            return candidate
    return None
