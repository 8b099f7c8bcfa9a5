"""Which parameters train: LoRA (peft) on the language model, optionally the vision tower/merger,
or full fine-tuning, with the vision tower frozen, LoRA-adapted or fully trained."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from dentvlm.model.build import projector_module_name, vision_module_name

FINETUNE_MODES = ("lora", "full")
VISION_MODES = ("frozen", "lora", "full")
ALL_LINEAR = "all-linear"


@dataclass
class FinetuneSpec:
    """What to train.

    Attributes:
        mode: "lora" (adapters, base frozen) or "full" (every language-model weight).
        vision: The vision tower: "frozen", "lora" (adapters on its linear layers; LoRA mode only)
            or "full" (all its weights train).
        train_projector: Train the vision-to-language projector (Qwen-VL merger) fully.
        lora_rank: LoRA rank r.
        lora_alpha: LoRA scaling alpha (update scale alpha / r).
        lora_dropout: Dropout on the LoRA input.
        lora_target: "all-linear" (every linear layer of the language model, not lm_head) or
            module name suffixes such as ["q_proj", "v_proj"].
        extra_trainable: Further modules trained fully (e.g. ["lm_head", "embed_tokens"] for a
            randomly initialised model), by name suffix.
    """

    mode: str = "lora"
    vision: str = "frozen"
    train_projector: bool = False
    lora_rank: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    lora_target: str | list[str] = ALL_LINEAR
    extra_trainable: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.mode not in FINETUNE_MODES:
            raise ValueError(f"model.finetune must be one of {FINETUNE_MODES}, got {self.mode!r}")
        if self.vision not in VISION_MODES:
            raise ValueError(f"model.vision must be one of {VISION_MODES}, got {self.vision!r}")
        if self.mode == "full" and self.vision == "lora":
            raise ValueError("model.vision='lora' needs model.finetune='lora'")
        if self.lora_rank < 1:
            raise ValueError(f"model.lora_rank must be >= 1, got {self.lora_rank}")


def language_linear_names(model: torch.nn.Module) -> list[str]:
    """Qualified names of the language model's linear layers (vision tower and lm_head excluded)."""
    vision = vision_module_name(model)
    names = []
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.Linear) or name.endswith("lm_head"):
            continue
        if vision and (name == vision or name.startswith(vision + ".")):
            continue
        names.append(name)
    return names


def vision_linear_names(model: torch.nn.Module, include_projector: bool) -> list[str]:
    vision = vision_module_name(model)
    projector = projector_module_name(model)
    if vision is None:
        raise ValueError("model.vision='lora': no vision tower found in this model")
    return [
        name for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and name.startswith(vision + ".")
        and (include_projector or not (projector and name.startswith(projector + ".")))
    ]


def apply_finetuning(model: torch.nn.Module, spec: FinetuneSpec) -> torch.nn.Module:
    """Freeze/unfreeze or wrap `model` with LoRA according to `spec`; returns the model to train."""
    vision = vision_module_name(model)
    projector = projector_module_name(model)
    if spec.mode == "full":
        for name, param in model.named_parameters():
            in_vision = vision is not None and name.startswith(vision + ".")
            in_projector = projector is not None and name.startswith(projector + ".")
            param.requires_grad = not in_vision or spec.vision == "full" or (in_projector and spec.train_projector)
        return model

    from peft import LoraConfig, get_peft_model

    if spec.lora_target == ALL_LINEAR:
        targets = language_linear_names(model)
    else:
        targets = [spec.lora_target] if isinstance(spec.lora_target, str) else list(spec.lora_target)
    if spec.vision == "lora":
        targets += vision_linear_names(model, include_projector=not spec.train_projector)
    to_save = list(spec.extra_trainable)
    if spec.vision == "full" and vision:
        to_save.append(vision)
    elif spec.train_projector and projector:
        to_save.append(projector)
    config = LoraConfig(
        r=spec.lora_rank, lora_alpha=spec.lora_alpha, lora_dropout=spec.lora_dropout,
        target_modules=targets, modules_to_save=to_save or None,
    )
    return get_peft_model(model, config)


def parameter_counts(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts; shared tensors counted once."""
    seen, trainable, total = set(), 0, 0
    for param in model.parameters():
        if id(param) in seen:
            continue
        seen.add(id(param))
        total += param.numel()
        trainable += param.numel() if param.requires_grad else 0
    return trainable, total
