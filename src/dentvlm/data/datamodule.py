"""`DentDataModule`: streams dentvlm shards into task-formatted, processor-encoded batches.

Every `__init__` argument is a YAML key under ``data:`` in the configs.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import lightning as L
from torch.utils.data import DataLoader

from dentvlm.data.collate import BatchCollator, ChatEncoder, Encoded
from dentvlm.data.groups import checkup_groups
from dentvlm.data.rope import knows_rope_of
from dentvlm.data.shards import ShardSample, decode_image, iter_shard
from dentvlm.data.stream import CheckupStream, ShardRef
from dentvlm.data.tasks import (
    MODALITIES,
    NONE_ANSWER,
    Example,
    format_checkup,
    format_report,
    select_images,
    task_variant,
    with_demonstrations,
)
from dentvlm.data.thumbnails import thumbnail_strip
from dentvlm.data.vision_plan import VisionGeometry, vision_geometry
from dentvlm.data.wire import WireBatch, from_wire
from dentvlm.labels import DEFAULT_CLASSES, LabelParser
from dentvlm.records import MODALITIES as IMAGE_MODALITIES
from dentvlm.sharding import load_manifest


class HasTask:
    """Picklable predicate: does a shard sample serve this task variant with these classes?"""

    def __init__(self, variant: str, classes: tuple[str, ...]):
        self.variant, self.classes = variant, classes

    def __call__(self, sample: ShardSample) -> bool:
        return self.variant in sample.checkup.tasks(self.classes)


class ExampleMaker:
    """Picklable: shard sample -> formatted example (after any few-shot demonstrations) -> encoded
    example (when an encoder is set)."""

    def __init__(self, task: str, classes: tuple[str, ...], multi_label: bool, modality: str,
                 image_modalities: tuple[str, ...], max_images: int, decode_long_side: int | None,
                 encoder: ChatEncoder | None, training: bool, none_answer: str = NONE_ANSWER,
                 demonstrations: list[ShardSample] | None = None, role: str = "test"):
        self.task, self.classes, self.multi_label, self.modality = task, classes, multi_label, modality
        self.role = role
        self.image_modalities, self.max_images = image_modalities, max_images
        self.decode_long_side, self.encoder, self.training = decode_long_side, encoder, training
        self.none_answer = none_answer
        self.demonstrations = demonstrations or []

    def example(self, sample: ShardSample, is_padding: bool = False) -> Example:
        example = self._single(sample)
        example.is_padding, example.role = is_padding, self.role
        if not self.training:  # only evaluation reports on them
            example.thumbnail = thumbnail_strip(example.images)
            example.groups = checkup_groups(sample.checkup)
        if self.demonstrations:
            example = with_demonstrations(example, [self._single(d) for d in self.demonstrations])
        return example

    def _single(self, sample: ShardSample) -> Example:
        checkup = sample.checkup
        if self.task == "chat":  # a conversation's placeholders fix its images
            indices = list(range(len(checkup.modalities)))
        elif self.modality == "text":
            indices = []
        else:
            indices = select_images(checkup, self.image_modalities, self.max_images)
        images = [decode_image(sample.images[i], f"{sample.where} image {i}", self.decode_long_side)
                  for i in indices]
        example = format_checkup(checkup, images, self.task, self.classes, self.multi_label, self.modality,
                                 self.none_answer)
        if self.decode_long_side is None:  # the images are the stored JPEGs decoded as they are
            example.image_bytes = [sample.images[i] for i in indices[: len(example.images)]]
        return example

    def __call__(self, sample: ShardSample, is_padding: bool):
        example = self.example(sample, is_padding)
        return self.encoder(example, self.training) if self.encoder is not None else example


def prompt_length(encoded: Encoded) -> int:
    """Grouping key: the prompt's length (the answer's would sort by label)."""
    return encoded.prompt_len


class EpochLoader(DataLoader):
    """DataLoader that tells its stream the epoch before each pass (through shared memory, so
    persistent workers see it too): training shuffles differ per epoch, reproducibly."""

    def __init__(self, dataset: CheckupStream, epoch_fn: Callable[[], int], **kwargs):
        super().__init__(dataset, **kwargs)
        self.epoch_fn = epoch_fn

    def __iter__(self):
        self.dataset.epoch = self.epoch_fn()
        return Unwired(super().__iter__())


class Unwired:
    """A DataLoader iterator whose batches come back from `WireBatch`es (see `dentvlm.data.wire`)."""

    def __init__(self, batches: Iterator):
        self.batches = batches

    def __iter__(self) -> Unwired:
        return self

    def __next__(self):
        batch = next(self.batches)
        return from_wire(batch) if isinstance(batch, WireBatch) else batch

    def __len__(self) -> int:
        return len(self.batches)


class DentDataModule(L.LightningDataModule):
    """Shards -> batches for one training task and one or more evaluation tasks.

    Args:
        shards: Folder with {train,val,test}-*.tar and manifest.json (from `dentvlm shard`).
        task: Training task: classification, report or chat.
        eval_tasks: Tasks evaluated on validation/test, one dataloader each (default: [task]).
        multi_label: Classification answers list every condition (or `none_answer`); False keeps the
            checkups with exactly one of the classes (the paper's single-label task).
        none_answer: Multi-label answer of a checkup with none of the classes (must parse as "no finding").
        modality: Model input: both (images + text), images, or text.
        image_modalities: Image kinds to show, in this order (photograph, radiograph).
        max_images: At most this many images per checkup (the COde files used 8).
        batch_size: Training batch size per device.
        eval_batch_size: Validation/test batch size per device (default: batch_size).
        num_workers: DataLoader worker processes per device (and per evaluation task).
        persistent_workers: Keep workers alive between epochs and validations (no start-up per pass).
        prefetch_factor: Batches each worker prepares ahead.
        shuffle_buffer: Samples in each worker's shuffle buffer (training).
        group_by_length: Group windows of this many training batches by prompt length to cut padding
            (0 or 1: off). Lengths are bucketed (`length_bucket`) and shuffled inside a bucket, so
            batches do not sort by answer, and so by label.
        length_bucket: Width in tokens of a length bucket for `group_by_length`.
        packing: Training batches become one padding-free row holding the batch's samples, each with
            its own positions and attention (see `dentvlm.data.packing`); no padding, so no grouping.
        seed: Seed of shard order and shuffle buffers (different per rank, worker and epoch).
        processor_path: Hugging Face model/processor folder or "tiny" (the CLI links it to the model
            path); without one, batches are lists of formatted `Example`s.
        trust_remote_code: Allow processor code from the model folder (linked to the model's setting).
        cutoff_len: Maximum tokens per training example. Each sample's images are scaled down together
            (not below `min_pixels`) until images + text fit; only a sample that cannot fit even
            then is cut inside its answer or dropped. Evaluation samples follow the same image
            budget but are never cut or dropped (they may pass `cutoff_len`, up to `context_len`).
        overflow: Training examples that cannot fit: drop (counted, replaced by a padding row; see
            the data_monitor's max_drop_fraction) or error.
        min_pixels: Minimum pixels per image (None: the processor's own).
        max_pixels: Maximum pixels per image, lowered per sample by the budget (None: the processor's own).
        context_len: Longest evaluation sequence, few-shot prompts included (None: the model
            config's max_position_embeddings).
        few_shot_max_pixels: Maximum pixels per image of few-shot demonstrations (None: max_pixels),
            lowered further when demonstrations and question would not fit `context_len`.
        decode_long_side: Downscale images at decode time to this long side (None: as stored).
        few_shot: Training examples shown before each evaluation question (few-shot prompting of a
            base model; 0: zero-shot). Training batches never get demonstrations.
        train_split: Split used for training.
        val_split: Split used for validation.
        test_split: Split used for test and predict.
        threshold_split: Split whose classification checkups `dentvlm test` also scores (class probabilities
            only, no generated answers) to choose operating thresholds (Youden's J, a target sensitivity) that
            are then applied unchanged to the test split; null: none.
    """

    def __init__(
        self,
        shards: str = "shards/demo",
        task: str = "classification",
        eval_tasks: list[str] | None = None,
        multi_label: bool = True,
        none_answer: str = NONE_ANSWER,
        modality: str = "both",
        image_modalities: list[str] = list(IMAGE_MODALITIES),  # noqa: B006 (a YAML default; never mutated)
        max_images: int = 8,
        batch_size: int = 2,
        eval_batch_size: int | None = None,
        num_workers: int = 2,
        persistent_workers: bool = True,
        prefetch_factor: int = 2,
        shuffle_buffer: int = 256,
        group_by_length: int = 8,
        length_bucket: int = 8,
        packing: bool = False,
        seed: int = 0,
        processor_path: str | None = None,
        trust_remote_code: bool = False,
        cutoff_len: int = 4096,
        overflow: str = "drop",
        min_pixels: int | None = None,
        max_pixels: int | None = None,
        context_len: int | None = None,
        few_shot_max_pixels: int | None = None,
        decode_long_side: int | None = None,
        few_shot: int = 0,
        train_split: str = "train",
        val_split: str = "val",
        test_split: str = "test",
        threshold_split: str | None = "val",
    ):
        super().__init__()
        self.save_hyperparameters()
        eval_tasks = list(eval_tasks or [task])
        for name in [task, *eval_tasks]:
            task_variant(name, multi_label)  # raises on an unknown task
        if modality not in MODALITIES:
            raise ValueError(f"data.modality must be one of {MODALITIES}, got {modality!r}")
        bad = [m for m in image_modalities if m not in IMAGE_MODALITIES]
        if bad:
            raise ValueError(f"data.image_modalities: unknown {bad}; expected some of {IMAGE_MODALITIES}")
        if batch_size < 1 or max_images < 0 or num_workers < 0:
            raise ValueError("data.batch_size must be >= 1, data.max_images and data.num_workers >= 0")
        if not LabelParser(DEFAULT_CLASSES).says_no_finding(none_answer):
            raise ValueError(f"data.none_answer {none_answer!r} does not read as 'no finding' to the label parser; "
                             "use e.g. none, no disease or no findings")
        self.shard_dir = Path(shards)
        self.task, self.eval_tasks = task, eval_tasks
        self.encoder: ChatEncoder | None = None
        self.vision: VisionGeometry | None = None  # Qwen2.5-VL: the collator makes the vision plan
        self.rank, self.world_size = 0, 1
        self._resume_epoch = 0
        self.few_shot = few_shot

    @functools.cached_property
    def manifest(self) -> dict:
        return load_manifest(self.shard_dir)

    @property
    def classes(self) -> tuple[str, ...]:
        """The label vocabulary, fixed when the shards were built."""
        return tuple(self.manifest["classes"])

    def setup(self, stage: str | None = None) -> None:
        if self.trainer is not None:
            self.rank, self.world_size = self.trainer.global_rank, self.trainer.world_size
        hp = self.hparams
        if hp.processor_path and self.encoder is None:
            from dentvlm.model.build import context_length, load_processor, model_config

            processor = load_processor(hp.processor_path, hp.trust_remote_code)
            config = model_config(hp.processor_path, hp.trust_remote_code)
            context_len = hp.context_len or context_length(config)
            self.vision = vision_geometry(config)
            self.encoder = ChatEncoder(processor, hp.cutoff_len, hp.overflow, hp.min_pixels, hp.max_pixels,
                                       context_len=context_len, few_shot_max_pixels=hp.few_shot_max_pixels)

    def stream(self, split: str, task: str, training: bool) -> CheckupStream:
        """The stream of one split and task, distributed for this process."""
        hp = self.hparams
        variant = task_variant(task, hp.multi_label)
        if split not in self.manifest["splits"]:
            raise ValueError(f"{self.shard_dir}: manifest has no split {split!r}")
        shards = [
            ShardRef(str(self.shard_dir / s["file"]), s["tasks"].get(variant, 0), s["samples"], s["sha256"])
            for s in self.manifest["splits"][split]["shards"]
        ]
        demonstrations = self.demonstrations(task) if self.few_shot and not training else None
        role = "train" if training else "test" if split == hp.test_split else "val"
        maker = ExampleMaker(task, self.classes, hp.multi_label, hp.modality, tuple(hp.image_modalities),
                             hp.max_images, hp.decode_long_side, self.encoder, training, hp.none_answer,
                             demonstrations, role)
        stream = CheckupStream(
            [s for s in shards if s.eligible], HasTask(variant, self.classes), maker,
            batch_size=hp.batch_size if training else (hp.eval_batch_size or hp.batch_size),
            training=training, seed=hp.seed, shuffle_buffer=hp.shuffle_buffer,
            # packed rows have no padding to cut, so grouping by length would only reorder
            group_by_length=hp.group_by_length if training and self.encoder and not hp.packing else 0,
            length_of=prompt_length,
            length_bucket=hp.length_bucket,
        )
        stream.distribute(self.rank, self.world_size, hp.num_workers)
        if training and len(stream.shards) < stream.total_workers and self.rank == 0:
            loaders, shards = stream.total_workers, len(stream.shards)
            warnings.warn(
                f"{self.shard_dir}: {shards} {split} shards for {loaders} data loaders ({self.world_size} ranks x "
                f"{max(1, hp.num_workers)} workers): loaders share shards and read each from its start to their "
                f"part, about {(loaders + shards) / (2 * shards):.1f}x the reading of one pass; rebuild with a "
                "smaller `dentvlm shard --max_count` for shards of their own", stacklevel=2)
        return stream

    def demonstrations(self, task: str) -> list[ShardSample]:
        """`few_shot` training samples for `task`, chosen deterministically: the first of each new
        label set in shard order, so the prompt shows different conditions."""
        eligible = HasTask(task_variant(task, self.hparams.multi_label), self.classes)
        chosen: list[ShardSample] = []
        spare: list[ShardSample] = []
        seen: set[tuple[str, ...]] = set()
        for shard in self.manifest["splits"][self.hparams.train_split]["shards"]:
            for sample in iter_shard(self.shard_dir / shard["file"]):
                if len(chosen) == self.few_shot:
                    return chosen
                if not eligible(sample):
                    continue
                labels = tuple(sorted(sample.checkup.labels))
                (spare if labels in seen else chosen).append(sample)
                seen.add(labels)
        return (chosen + spare)[: self.few_shot]

    def _loader(self, stream: CheckupStream) -> EpochLoader:
        collate = list
        workers = self.hparams.num_workers
        if self.encoder is not None:
            processor = self.encoder.processor
            merge = processor.image_processor.merge_size if knows_rope_of(processor) else None
            collate = BatchCollator(self.encoder.pad_id, packing=self.hparams.packing and stream.training, merge=merge,
                                    vision=self.vision, wire=workers > 0)
        persistent = workers > 0 and self.hparams.persistent_workers
        stream.prepare_next_epoch = persistent  # idle workers make the start of their next epoch
        on_gpu = self.trainer is not None and self.trainer.strategy.root_device.type == "cuda"
        return EpochLoader(
            stream, epoch_fn=self._current_epoch, batch_size=stream.batch_size, num_workers=workers,
            collate_fn=collate, persistent_workers=persistent,
            pin_memory=on_gpu, prefetch_factor=self.hparams.prefetch_factor if workers > 0 else None,
        )

    def _current_epoch(self) -> int:
        """The training epoch about to run (what Lightning hands samplers' set_epoch)."""
        if self.trainer is None:
            return 0
        return max(self.trainer.fit_loop.epoch_progress.current.processed, self._resume_epoch)

    def state_dict(self) -> dict:
        return {"train_epoch": self._current_epoch()}

    def load_state_dict(self, state: dict) -> None:
        # Lightning may create the first training iterator before it restores the loops (e.g. when
        # configure_optimizers asks for estimated_stepping_batches), which would replay epoch 0's
        # order after a resume. Remember the epoch, and drop an iterator made too early.
        self._resume_epoch = int(state.get("train_epoch", 0))
        if self.trainer is not None and self.trainer.fit_loop._combined_loader is not None:
            self.trainer.fit_loop._combined_loader = None

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.stream(self.hparams.train_split, self.task, training=True))

    def val_dataloader(self) -> list[DataLoader]:
        return [self._loader(self.stream(self.hparams.val_split, t, training=False)) for t in self.eval_tasks]

    def test_dataloader(self) -> list[DataLoader]:
        """One loader per evaluation task, then (see `threshold_split`) the checkups whose class probabilities
        choose the operating thresholds."""
        hp = self.hparams
        loaders = [self._loader(self.stream(hp.test_split, t, training=False)) for t in self.eval_tasks]
        if self.threshold_checkups():
            loaders.append(self._loader(self.stream(hp.threshold_split, "classification", training=False)))
        return loaders

    def threshold_checkups(self) -> int:
        """Classification checkups of `threshold_split` that `dentvlm test` scores (0: none)."""
        hp = self.hparams
        if not hp.threshold_split or "classification" not in self.eval_tasks or hp.threshold_split == hp.test_split:
            return 0
        if hp.threshold_split not in self.manifest["splits"]:
            return 0
        return self.split_size(hp.threshold_split, "classification")

    def predict_dataloader(self) -> list[DataLoader]:
        return self.test_dataloader()

    def report_language(self, setting: str = "auto") -> str:
        """"en" or "zh" for report metrics; "auto" looks at the first report of the shards."""
        from dentvlm.metrics.text import resolve_language

        if setting != "auto":
            return resolve_language(setting, [])
        for split in (self.hparams.val_split, self.hparams.test_split, self.hparams.train_split):
            for shard in self.manifest["splits"].get(split, {}).get("shards", []):
                for sample in iter_shard(self.shard_dir / shard["file"]):
                    return resolve_language("auto", [format_report(sample.checkup.report)])
        return "en"

    def split_size(self, split: str, task: str) -> int:
        """Eligible samples of `split` for `task`, from the manifest."""
        variant = task_variant(task, self.hparams.multi_label)
        return self.manifest["splits"][split]["tasks"].get(variant, 0)

