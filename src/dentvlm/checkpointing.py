"""Self-describing checkpoints: beside each Lightning ``<name>.ckpt`` (trainable weights, optimizer and
loop state, for resuming), a folder ``<name>/`` that stands on its own:

- ``adapter_model.safetensors`` + ``adapter_config.json`` (peft format; LoRA runs), or
  ``model.safetensors`` + ``config.json`` (full fine-tuning),
- the processor files, ``labels.json`` (label vocabulary), ``config.yaml`` (the resolved run
  config) and ``dentvlm.json`` (base model, task, fine-tuning settings).

`dentvlm export` turns that folder into an adapter or a merged model that plain transformers loads.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from dentvlm import __version__
from dentvlm.base_model import identity
from dentvlm.permissions import follow_umask

DESCRIPTION = "dentvlm.json"


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, read in blocks (a checkpoint may hold gigabytes)."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sidecar_dir(ckpt_path: str | Path) -> Path:
    path = Path(ckpt_path)
    return path.with_name(path.name.removesuffix(".ckpt"))


class AdapterCheckpoint(ModelCheckpoint):
    """`ModelCheckpoint` that also writes the self-describing folder beside each checkpoint file."""

    def _save_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        super()._save_checkpoint(trainer, filepath)
        module = trainer.lightning_module
        weights = gathered_weights(module.model, trainable_only=module.hparams.finetune == "lora")  # collective
        if trainer.is_global_zero:
            write_sidecar(trainer, weights, sidecar_dir(filepath))
        trainer.strategy.barrier("dentvlm_sidecar")

    def _remove_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        super()._remove_checkpoint(trainer, filepath)
        if trainer.is_global_zero:
            shutil.rmtree(sidecar_dir(filepath), ignore_errors=True)


def gathered_weights(model: torch.nn.Module, trainable_only: bool) -> dict[str, torch.Tensor]:
    """Full (unsharded) weights of `model` on CPU, on rank 0; a collective call under FSDP."""
    if not torch.distributed.is_initialized():
        return {name: tensor.detach().cpu() for name, tensor in model.state_dict().items()
                if not trainable_only or name in _trainable_names(model)}
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True, ignore_frozen_params=trainable_only)
    return get_model_state_dict(model, options=options)


def _trainable_names(model: torch.nn.Module) -> set[str]:
    return {name for name, param in model.named_parameters() if param.requires_grad}


def write_sidecar(trainer: L.Trainer, weights: dict[str, torch.Tensor], out: Path) -> None:
    """Write the self-describing folder for `weights` (keys of the wrapped model)."""
    module = trainer.lightning_module
    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    save_trained_weights(module.model, weights, staging, module.hparams.finetune)
    module.processor.save_pretrained(staging)
    datamodule = trainer.datamodule
    classes = list(getattr(datamodule, "classes", ()) or ())
    (staging / "labels.json").write_text(json.dumps({"classes": classes}, indent=2) + "\n")
    config_text = resolved_config(trainer)
    if config_text:
        (staging / "config.yaml").write_text(config_text)
    description = {
        "dentvlm_version": __version__,
        "base_model": str(module.resolved_model_path()),
        "base_model_identity": identity(module.resolved_model_path()),  # recognises a moved copy
        "finetune": module.hparams.finetune,
        "task": getattr(datamodule, "task", None),
        "classes": classes,
        "model_hparams": dict(module.hparams),
        # how the training shards stored images: predict and serve prepare new images the same way,
        # also where the shards are not
        "shard_images": _shard_image_settings(datamodule),
        "global_step": trainer.global_step,
        "epoch": trainer.current_epoch,
    }
    (staging / DESCRIPTION).write_text(json.dumps(description, indent=2, default=str) + "\n")
    follow_umask(staging)  # safetensors writes 0600
    shutil.rmtree(out, ignore_errors=True)
    staging.rename(out)


def _shard_image_settings(datamodule) -> dict:
    settings = getattr(datamodule, "manifest", {}).get("settings", {})
    return {key: settings[key] for key in ("image_long_side", "jpeg_quality") if key in settings}


def save_trained_weights(model: torch.nn.Module, weights: dict[str, torch.Tensor], out: Path, finetune: str) -> None:
    """peft adapter files for LoRA; the full model (config + safetensors) for full fine-tuning."""
    if finetune == "lora":
        from peft.utils import get_peft_model_state_dict
        from safetensors.torch import save_file

        adapter = {k: v.contiguous() for k, v in get_peft_model_state_dict(model, state_dict=weights).items()}
        save_file(adapter, str(out / "adapter_model.safetensors"), metadata={"format": "pt"})
        model.peft_config["default"].save_pretrained(str(out))
    else:
        model.save_pretrained(str(out), state_dict=weights)


def resolved_config(trainer: L.Trainer) -> str | None:
    """The run's resolved CLI config as YAML, when the run came from the CLI."""
    from lightning.pytorch.cli import SaveConfigCallback

    for callback in trainer.callbacks:
        if isinstance(callback, SaveConfigCallback):
            return callback.parser.dump(callback.config, skip_none=False)
    return None
