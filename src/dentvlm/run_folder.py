"""The run folder (``trainer.default_root_dir``): one setting moves everything a run writes, checks that
fail before anything is built or written, and no leftovers from a run that failed before its first batch.

- Loggers without a ``save_dir``, checkpoint callbacks without a ``dirpath`` and the results writer
  without an ``out_dir`` get the run folder (``<root>``, ``<root>/checkpoints``, ``<root>/results``),
  so ``--trainer.default_root_dir runs/b`` moves a config's whole run.
- Before the model is built: the checkpoint to load exists, the shards' manifest is readable, every
  split the command reads has samples for its task, the model folder exists.
- A run that fails before finishing a batch leaves nothing behind: its W&B offline run, its logger
  version folder, the config copy and the folders it created are removed.
"""

from __future__ import annotations

import os
import pydoc
import shutil
from pathlib import Path

# Checkpoint names Lightning resolves itself (not file paths).
SPECIAL_CKPT_PATHS = ("best", "hpc", "registry")


def derive_run_paths(config) -> None:
    """Fill the unset output folders of one subcommand's config (a jsonargparse Namespace) from
    ``trainer.default_root_dir``."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    trainer = config.trainer
    root = Path(trainer.default_root_dir or ".")
    loggers = trainer.logger if isinstance(trainer.logger, list) else [trainer.logger]
    for logger in loggers:
        init = _init_args(logger)
        if init is None or "save_dir" not in init:
            continue
        wandb_default = str(logger.class_path).endswith("WandbLogger") and init.save_dir == "."
        if init.save_dir is None or wandb_default:
            init.save_dir = str(root)
    for callback in trainer.callbacks or []:
        init = _init_args(callback)
        cls = pydoc.locate(str(getattr(callback, "class_path", "")))
        checkpoints = isinstance(cls, type) and issubclass(cls, ModelCheckpoint)
        if init is not None and checkpoints and init.get("dirpath") is None:
            init.dirpath = str(root / "checkpoints")
    results = config.get("results")
    if results is not None and results.get("out_dir") is None:
        results.out_dir = str(root / "results")


def _init_args(entry):
    return entry.get("init_args") if hasattr(entry, "get") and "class_path" in entry else None


# W&B's own places outside a run folder (artifact staging for tables and media, its caches), unless the
# user chose them before dentvlm started.
WANDB_PLACES = {"WANDB_DATA_DIR": "data", "WANDB_CACHE_DIR": "cache", "WANDB_ARTIFACT_DIR": "artifacts"}
USER_WANDB_PLACES = {name for name in WANDB_PLACES if name in os.environ}


def keep_wandb_files_in(root: Path) -> None:
    """Point W&B's staging and cache folders into `<root>/wandb/` (they default to ~/.local/share/wandb
    and ~/.cache/wandb): a run's tables and media stay with the run, and go when it is deleted."""
    for name, folder in WANDB_PLACES.items():
        if name not in USER_WANDB_PLACES:
            os.environ[name] = str((root / "wandb" / folder).absolute())


def check_before_run(subcommand: str, ckpt_path: str | None, trainer, datamodule, model) -> None:
    """Fail now, with one clear message, what would otherwise fail after the model is built.

    Raises:
        FileNotFoundError: a checkpoint, the shards' manifest, a shard it lists or the model folder is missing.
        ValueError: a split the command reads has no samples for its task, one of its shards is not the size
            the manifest lists, or the trainer would evaluate under inference mode with FSDP2.
    """
    _check_inference_mode(trainer)
    _check_ckpt_path(subcommand, ckpt_path, trainer)
    checkpoint = resolved_checkpoint(ckpt_path, trainer)
    _check_splits(subcommand, trainer, datamodule)
    from dentvlm.model.build import TINY, resolve_model_path

    if model.hparams.model_path != TINY:
        resolve_model_path(model.hparams.model_path)
    if checkpoint is not None:
        _check_base_model(checkpoint, model.hparams.model_path)
    if subcommand == "test":
        _check_class_scoring(model, datamodule)


def _check_class_scoring(model, datamodule) -> None:
    """What would stop class scoring at the first test batch, after the model loaded and answered."""
    from dentvlm.model.scoring import check_attention, check_class_count

    hp = model.hparams
    if not hp.score_classes or "classification" not in datamodule.eval_tasks:
        return
    check_attention(hp.attn_implementation)
    check_class_count(len(datamodule.classes), datamodule.hparams.multi_label)


def _check_base_model(checkpoint: Path, model_path: str) -> None:
    """A checkpoint is evaluated or resumed on the base model it was trained on (recognised by its config,
    wherever it lies; see `dentvlm.base_model`)."""
    import json

    from dentvlm.base_model import different_model
    from dentvlm.checkpointing import DESCRIPTION, sidecar_dir
    from dentvlm.model.build import resolve_model_path

    described = sidecar_dir(checkpoint) / DESCRIPTION
    try:
        expected = json.loads(described.read_text(encoding="utf-8")).get("base_model_identity")
    except (OSError, ValueError, AttributeError):
        return  # no readable description: the weights' own check (missing keys) still applies when loading
    recorded_model = different_model(resolve_model_path(model_path), expected)
    if recorded_model:
        raise ValueError(f"model.model_path {model_path!r} is not the base model {checkpoint} was trained on "
                         f"({described} records {recorded_model}); point model.model_path at that model")


def resolved_checkpoint(ckpt_path: str | None, trainer) -> Path | None:
    """The checkpoint file `--ckpt_path` names (``last``: the newest last*.ckpt of the run's checkpoint
    folders), or None (none, none there yet, or one Lightning finds itself such as ``best``)."""
    if ckpt_path is None or ckpt_path in SPECIAL_CKPT_PATHS:
        return None
    if ckpt_path != "last":
        return Path(ckpt_path) if Path(ckpt_path).exists() else None
    found = [path for folder in _checkpoint_folders(trainer) for path in sorted(folder.glob("last*.ckpt"))]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def _checkpoint_folders(trainer) -> list[Path]:
    return [Path(cb.dirpath) for cb in trainer.checkpoint_callbacks if getattr(cb, "dirpath", None)]


def _check_ckpt_path(subcommand: str, ckpt_path: str | None, trainer) -> None:
    if ckpt_path is None or ckpt_path in SPECIAL_CKPT_PATHS:
        return
    if ckpt_path == "last":
        if resolved_checkpoint(ckpt_path, trainer) is None and subcommand != "fit":  # fit: starts afresh
            where = ", ".join(map(str, _checkpoint_folders(trainer))) or "(no checkpoint folder configured)"
            raise FileNotFoundError(f"--ckpt_path last: no last checkpoint in {where}; train first (dentvlm fit) "
                                    "or pass a checkpoint file")
        return
    if not Path(ckpt_path).exists():
        raise FileNotFoundError(f"--ckpt_path {ckpt_path}: no such checkpoint")


def _check_splits(subcommand: str, trainer, datamodule) -> None:
    hp = datamodule.hparams
    manifest = datamodule.manifest  # raises naming the folder when missing or unreadable
    reads = []
    if subcommand == "fit":
        reads.append((hp.train_split, datamodule.task, "training"))
    if subcommand in ("fit", "validate") and trainer.limit_val_batches != 0:
        reads += [(hp.val_split, task, "validation") for task in datamodule.eval_tasks]
    if subcommand == "test":
        reads += [(hp.test_split, task, subcommand) for task in datamodule.eval_tasks]
    if subcommand == "test" and datamodule.threshold_checkups():
        reads.append((hp.threshold_split, "classification", "operating thresholds"))
    if subcommand in ("validate", "test") and _uses_demonstrations(trainer, datamodule):
        reads.append((hp.train_split, datamodule.task, "few-shot demonstrations"))
    for split, task, purpose in reads:
        if split not in manifest["splits"]:
            raise ValueError(f"{datamodule.shard_dir}: no split {split!r} (has {sorted(manifest['splits'])})")
        if datamodule.split_size(split, task) == 0:
            hint = " or pass --trainer.limit_val_batches 0 to train without validation" if purpose == "validation" \
                else ""
            raise ValueError(f"{datamodule.shard_dir}: the {split!r} split has no samples for the {task} task, so "
                             f"{purpose} would run on nothing; rebuild the shards with a non-empty {split} split{hint}")
    for split in dict.fromkeys(split for split, _, _ in reads):
        check_shard_files(datamodule.shard_dir, manifest, split)


def _uses_demonstrations(trainer, datamodule) -> bool:
    """Whether the command shows training examples in prompts (data.few_shot, or the base_few_shot baseline)."""
    from dentvlm.evaluation.results import ResultsWriter

    writers = [c for c in trainer.callbacks if isinstance(c, ResultsWriter)]
    return bool(datamodule.few_shot) or any("base_few_shot" in w.baselines and w.few_shot for w in writers)


def check_shard_files(shard_dir: Path, manifest: dict, split: str) -> None:
    """Every shard the manifest lists for `split` exists with the size it lists (a missing shard would
    otherwise be found only when a loader reaches it, after a whole training epoch).

    Raises:
        FileNotFoundError: a listed shard is missing (all missing ones are named, up to five).
        ValueError: a listed shard is not the size the manifest lists (truncated or replaced).
    """
    shards = manifest["splits"][split]["shards"]
    missing = [s["file"] for s in shards if not (Path(shard_dir) / s["file"]).is_file()]
    if missing:
        raise FileNotFoundError(f"{shard_dir}: {len(missing)} {split} shard(s) that manifest.json lists are missing "
                                f"({', '.join(missing[:5])}); rebuild the shards with `dentvlm shard`")
    for shard in shards:
        size = (Path(shard_dir) / shard["file"]).stat().st_size
        if size != shard["bytes"]:
            raise ValueError(f"{Path(shard_dir) / shard['file']}: {size:,} bytes, manifest.json lists "
                             f"{shard['bytes']:,}: truncated or not the shard that was written; rebuild the shards "
                             "with `dentvlm shard`")


def _check_inference_mode(trainer) -> None:
    from lightning.pytorch.strategies import ModelParallelStrategy

    if isinstance(trainer.strategy, ModelParallelStrategy) and trainer.test_loop.inference_mode:
        raise ValueError("trainer.inference_mode: true fails under FSDP2 on a GPU (inference tensors cannot be "
                         "all-gathered); leave it false, dentvlm's default (evaluation still runs without gradients)")


def run_config_path(trainer, stage: str) -> Path:
    """Where a command's resolved config is saved: the training run's beside its logs (config.yaml, as
    Lightning does), a test's beside its results, a validation's as validate-config.yaml: evaluating a
    run must not overwrite the config it was trained with."""
    from dentvlm.evaluation.results import ResultsWriter

    log_dir = Path(trainer.log_dir or trainer.default_root_dir)
    if stage == "test":
        writer = next((c for c in trainer.callbacks if isinstance(c, ResultsWriter) and c.out_dir), None)
        return (writer.out_dir if writer else log_dir / "results") / "config.yaml"
    return log_dir / ("config.yaml" if stage == "fit" else f"{stage}-config.yaml")


class FailedRunCleanup:
    """Remembers what exists before a run; `discard()` removes what a run that never finished a batch
    created (call it only on failure)."""

    def __init__(self, trainer, stage: str):
        self.trainer = trainer
        self.cwd = Path.cwd().resolve()
        self.log_dirs = [Path(d) for d in (_log_dir(logger) for logger in trainer.loggers) if d]
        self.config_file = run_config_path(trainer, stage)
        watched = [Path(trainer.default_root_dir), *self.log_dirs, self.config_file,
                   *(Path(cb.dirpath) for cb in trainer.checkpoint_callbacks if getattr(cb, "dirpath", None))]
        wandb_dirs = [Path(getattr(logger, "save_dir", None) or ".") / "wandb" for logger in trainer.loggers]
        self.wandb_places = [folder / place for folder in wandb_dirs for place in WANDB_PLACES.values()]
        watched += wandb_dirs + self.wandb_places
        self.existed = {p.resolve() for path in watched for p in (path, *path.parents) if p.exists()}

    def ran_a_batch(self) -> bool:
        trainer = self.trainer
        loops = [trainer.fit_loop.epoch_loop.val_loop, trainer.validate_loop, trainer.test_loop]
        return trainer.global_step > 0 or any(loop.batch_progress.total.completed for loop in loops)

    def discard(self) -> None:
        if self.ran_a_batch() or not self.trainer.is_global_zero:
            return  # logs and checkpoints of real work are kept; one rank cleans up
        try:
            self._discard()
        except OSError:  # never hide the run's own error behind a cleanup problem
            pass

    def _discard(self) -> None:
        removed = [self._discard_wandb(logger) for logger in self.trainer.loggers]
        removed += [path for path in self.wandb_places if self._remove_new(path)]
        removed += [path for path in self.log_dirs if self._remove_new(path)]
        removed += [self.config_file] if self._remove_new(self.config_file) else []
        removed += [Path(cb.dirpath) for cb in self.trainer.checkpoint_callbacks if getattr(cb, "dirpath", None)]
        for path in filter(None, removed):
            self._prune_new_empty(path)

    def _remove_new(self, path: Path) -> bool:
        if not path.exists() or path.resolve() in self.existed:
            return False
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        return True

    def _discard_wandb(self, logger) -> Path | None:
        run = getattr(logger, "_experiment", None)
        run_dir = getattr(run, "dir", None)
        if run is None or not run_dir:
            return None
        run.finish(exit_code=1)
        folder = Path(run_dir).parent  # <save_dir>/wandb/offline-run-<time>-<id>/files -> the run folder
        if self._remove_new(folder):
            for link in folder.parent.iterdir():  # latest-run, debug.log: links into the removed run
                if link.is_symlink() and not link.exists():
                    link.unlink()
        return folder

    def _prune_new_empty(self, path: Path) -> None:
        for folder in (path, *path.parents):
            resolved = folder.resolve() if folder.exists() else None
            if resolved is None:
                continue
            if resolved in self.existed or resolved == self.cwd or not folder.is_dir() or any(folder.iterdir()):
                return
            folder.rmdir()


def _log_dir(logger) -> str | None:
    # CSV/TensorBoard loggers: the version folder this run will write (computed, not created).
    if type(logger).__name__ in ("CSVLogger", "TensorBoardLogger"):
        return logger.log_dir
    return None
