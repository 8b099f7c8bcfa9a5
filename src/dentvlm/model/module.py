"""`DentVLM`: a Qwen-VL (or any HF image-text-to-text model) fine-tuned with LoRA or fully, under
single-device, DDP or FSDP2 (Lightning's ModelParallelStrategy).

Every `__init__` argument is a YAML key under ``model:``. Validation and test steps return the loss
and, for the first batches of each epoch, generated answers as `Prediction`s for the metric callbacks.
"""

from __future__ import annotations

import contextlib
import functools
import math
from pathlib import Path

import lightning as L
import torch

from dentvlm.data.vision_plan import VisionGeometry, vision_geometry
from dentvlm.metrics.callbacks import metric_name
from dentvlm.metrics.loss import TokenMeanLoss
from dentvlm.model.build import (
    DTYPES,
    attention,
    build_vlm_without_weights,
    load_processor,
    load_vlm,
    resolve_model_path,
)
from dentvlm.model.fast_paths import apply_fast_paths
from dentvlm.model.finetune import ALL_LINEAR, FinetuneSpec, apply_finetuning, parameter_counts
from dentvlm.model.generation import generation_config
from dentvlm.model.inputs import PixelNormalizer, model_inputs, with_vision_keepalive
from dentvlm.model.loss import answer_loss
from dentvlm.model.parallel import (
    gathered_parameters,
    load_sharded,
    prepare_for_calls_outside_forward,
    shard_model,
)
from dentvlm.model.scoring import answer_sets, class_probabilities, score_answers
from dentvlm.model.step_loss import StepLoss
from dentvlm.predictions import Prediction

FSDP_SHARDING = ("full", "hybrid")


class DentVLM(L.LightningModule):
    """Vision-language model fine-tuning and generation-based evaluation.

    Args:
        model_path: Local Hugging Face model folder (e.g. Qwen2.5-VL-7B-Instruct), or "tiny" for
            the embedded tiny Qwen2.5-VL-architecture model (built on first use).
        finetune: "lora" (adapters via peft, base frozen) or "full".
        vision: Vision tower: "frozen", "lora" (adapters; finetune=lora only) or "full".
        train_projector: Train the vision-language projector (Qwen-VL merger) fully.
        lora_rank: LoRA rank.
        lora_alpha: LoRA alpha.
        lora_dropout: LoRA dropout.
        lora_target: "all-linear" (all linear layers of the language model) or module name suffixes.
        extra_trainable: More modules trained fully, by name suffix (e.g. lm_head, embed_tokens).
        learning_rate: Peak AdamW learning rate.
        weight_decay: AdamW weight decay.
        warmup_ratio: Fraction of optimizer steps spent in linear warmup before the cosine decay.
        min_lr_ratio: Final learning rate as a fraction of the peak.
        dtype: Weight dtype: auto (as saved), float32, bfloat16 or float16.
        attn_implementation: sdpa, eager, flash_attention_2 or flash_attention_3.
        vision_attn_implementation: Another one for the vision tower (None: the same). On GPUs use
            flash_attention_2 here at least: one varlen call per block; under sdpa dentvlm batches
            Qwen2.5-VL's 112-px windows by size (`dentvlm.model.fast_paths`), a few calls per block.
        trust_remote_code: Allow model code from the model folder (off: only installed transformers code).
        gradient_checkpointing: Recompute activations in backward to save memory.
        fsdp_param_dtype: Under FSDP2, all-gather/compute dtype (e.g. bfloat16); None keeps `dtype`.
        fsdp_sharding: Under FSDP2: "full" shards over every GPU of every node; "hybrid" shards within
            a node and replicates across nodes (less inter-node traffic, more memory per GPU).
        max_new_tokens: Generation length limit for evaluation.
        num_beams: Beam count (1: greedy).
        generate_samples: Validation samples per task and epoch to generate answers for (-1: all);
            `dentvlm test` always generates for every sample.
        gather_for_generation: Under FSDP2, all-gather the parameters once per `generate` call and keep
            them until it ends (memory: the whole model per GPU, 15.5 GiB for a 7B in bf16), instead
            of re-gathering every layer for every new token; False for models that do not fit a GPU.
        score_classes: In `dentvlm test`, also give each classification checkup each class's probability
            (teacher-forced scoring of every allowed answer, `dentvlm.model.scoring`): AUROC, operating
            points, calibration. Costs about what generating the answers costs.
        max_skipped_steps: Optimizer steps that may be skipped for a non-finite loss or non-finite gradients
            (the step's update is dropped, the weights stay as they were) before the run stops.
    """

    def __init__(
        self,
        model_path: str = "tiny",
        finetune: str = "lora",
        vision: str = "frozen",
        train_projector: bool = False,
        lora_rank: int = 8,
        lora_alpha: int = 16,
        lora_dropout: float = 0.05,
        lora_target: str | list[str] = ALL_LINEAR,
        extra_trainable: list[str] | None = None,
        learning_rate: float = 5e-4,
        weight_decay: float = 0.0,
        warmup_ratio: float = 0.1,
        min_lr_ratio: float = 0.0,
        dtype: str = "auto",
        attn_implementation: str = "sdpa",
        vision_attn_implementation: str | None = None,
        trust_remote_code: bool = False,
        gradient_checkpointing: bool = False,
        fsdp_param_dtype: str | None = None,
        fsdp_sharding: str = "full",
        max_new_tokens: int = 128,
        num_beams: int = 1,
        generate_samples: int = 64,
        gather_for_generation: bool = True,
        max_skipped_steps: int = 10,
        score_classes: bool = True,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.spec = FinetuneSpec(finetune, vision, train_projector, lora_rank, lora_alpha, lora_dropout,
                                 lora_target, list(extra_trainable or []))
        if not 0 <= warmup_ratio < 1 or not 0 <= min_lr_ratio <= 1:
            raise ValueError("model.warmup_ratio must be in [0, 1) and model.min_lr_ratio in [0, 1]")
        if fsdp_param_dtype is not None and fsdp_param_dtype not in DTYPES:
            raise ValueError(f"model.fsdp_param_dtype must be one of {list(DTYPES)} or null")
        attention(attn_implementation, vision_attn_implementation)  # names checked before anything loads
        if fsdp_sharding not in FSDP_SHARDING:
            raise ValueError(f"model.fsdp_sharding must be one of {FSDP_SHARDING}, got {fsdp_sharding!r}")
        self.model: torch.nn.Module | None = None
        self.processor = None
        self.vision: VisionGeometry | None = None  # Qwen2.5-VL's, for the batches' vision plans
        # Only trainable weights are checkpointed (see state_dict), so loading is not strict.
        self.strict_loading = False
        self.eval_loss = torch.nn.ModuleDict()
        # False evaluates the base model: LoRA layers and modules_to_save copies switched off.
        self.use_adapter = True
        # What `dentvlm test` is evaluating: its name in the results, logs and W&B (fine-tuned, base,
        # base_few_shot), and the checkpoint file it loaded (recorded with its SHA-256).
        self.variant: str | None = None
        self.evaluated_checkpoint = None
        self._answer_sets: dict = {}
        self.step_loss = StepLoss()
        self.skipped_steps = 0

    # ----- model construction -------------------------------------------------------------
    def configure_model(self) -> None:
        if self.model is not None:
            return
        hp = self.hparams
        self.processor = load_processor(hp.model_path, hp.trust_remote_code)
        if self._uses_fsdp() and self.trainer.world_size > 1:
            self.model = self._load_sharded()
        else:
            self.model = self._prepare(load_vlm(hp.model_path, hp.dtype, self._attention(),
                                                hp.trust_remote_code))[0]
            if self._uses_fsdp():
                shard_model(self.network, self._fsdp_mesh(), param_dtype=self._fsdp_param_dtype())
        # from_pretrained returns eval mode; Lightning keeps the modes it finds, so training must be
        # asked for here (else dropout is off and gradient checkpointing never recomputes).
        self.model.train()

    def _prepare(self, model: torch.nn.Module) -> tuple[torch.nn.Module, torch.nn.Module]:
        """LoRA/full fine-tuning, gradient checkpointing and the generation settings; returns the
        model to keep and the Hugging Face model inside it."""
        hp = self.hparams
        model = apply_finetuning(model, self.spec)
        network = model.get_base_model() if hasattr(model, "get_base_model") else model
        apply_fast_paths(network)
        self.vision = vision_geometry(network.config)  # the batches' vision plans must be made for it
        if hp.gradient_checkpointing:
            enable = getattr(network, "activation_checkpointing_enable", None)
            if enable is not None:
                enable(activation_checkpointing_kwargs={"use_reentrant": False})
            else:  # transformers before the rename
                network.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            # transformers then makes the embeddings' outputs require grad (for reentrant checkpointing),
            # which pulls a frozen vision tower into every backward; non-reentrant checkpointing gives
            # LoRA and other trainable weights their gradients without it.
            network.disable_input_require_grads()
        network.generation_config = generation_config(hp.max_new_tokens, hp.num_beams, self.tokenizer)
        return model, network

    def _load_sharded(self) -> torch.nn.Module:
        """Under FSDP2 on several ranks: rank 0 reads the weights, the others build on the meta device."""
        hp = self.hparams
        return load_sharded(
            load=lambda: load_vlm(hp.model_path, hp.dtype, self._attention(), hp.trust_remote_code),
            build_on_meta=lambda: build_vlm_without_weights(hp.model_path, hp.dtype, self._attention(),
                                                            hp.trust_remote_code),
            prepare=self._prepare, mesh=self._fsdp_mesh(), device=self.trainer.strategy.root_device,
            param_dtype=self._fsdp_param_dtype(),
        )

    def _attention(self) -> str | dict:
        return attention(self.hparams.attn_implementation, self.hparams.vision_attn_implementation)

    def _fsdp_mesh(self):
        """The device mesh to shard over. Lightning's ModelParallelStrategy builds a 2-D mesh named
        (data_parallel, tensor_parallel); with both sizes "auto" it is (nodes, GPUs per node). dentvlm
        uses no tensor parallelism: "full" flattens the mesh (every rank holds one shard), "hybrid"
        keeps it 2-D, which FSDP2 reads as (replicate, shard)."""
        mesh = self.device_mesh
        if self.hparams.fsdp_sharding == "hybrid" or mesh.ndim == 1:
            return mesh
        return mesh._flatten("dp_shard")

    def _fsdp_param_dtype(self) -> torch.dtype | None:
        return DTYPES[self.hparams.fsdp_param_dtype] if self.hparams.fsdp_param_dtype else None

    @property
    def network(self) -> torch.nn.Module:
        """The Hugging Face model to call. LoRA layers live inside it, so calling it directly applies
        them; going through the peft wrapper would bypass FSDP2's root hooks (peft calls
        `model.forward` rather than `model(...)`)."""
        return self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model

    @property
    def tokenizer(self):
        return self.processor.tokenizer

    @functools.cached_property
    def pixels(self) -> PixelNormalizer:
        return PixelNormalizer(self.processor.image_processor)

    def resolved_model_path(self):
        return resolve_model_path(self.hparams.model_path)

    def variant_details(self) -> dict:
        """What the evaluated variant is: its base model (folder and identity) and, with the adapter on,
        the checkpoint file (path and SHA-256), so a results folder says exactly what it scored."""
        from dentvlm.base_model import identity
        from dentvlm.checkpointing import file_sha256

        base = self.resolved_model_path()
        details = {"base_model": str(base), "base_model_identity": identity(base)}
        if self.use_adapter and self.evaluated_checkpoint is not None:
            path = Path(self.evaluated_checkpoint).resolve()
            details["checkpoint"] = {"path": str(path), "sha256": file_sha256(path)}
        return details

    def _uses_fsdp(self) -> bool:
        from lightning.pytorch.strategies import ModelParallelStrategy

        return self._trainer is not None and isinstance(self.trainer.strategy, ModelParallelStrategy)

    def _data_parallel_size(self) -> int:
        """Ranks whose gradients are averaged: all of them (DDP, and FSDP2 full or hybrid)."""
        return self.trainer.world_size

    def on_fit_start(self) -> None:
        trainable, total = parameter_counts(self)
        self.print(f"dentvlm: {trainable:,} trainable of {total:,} parameters ({100 * trainable / total:.2f}%)"
                   + (" per shard" if self._uses_fsdp() else ""))
        if self._uses_fsdp():
            mesh = self._fsdp_mesh()
            layout = "replicate x shard" if mesh.ndim == 2 else "shard"
            self.print(f"dentvlm: FSDP2 {self.hparams.fsdp_sharding} sharding over a {tuple(mesh.shape)} mesh "
                       f"({layout})")

    # ----- checkpoints hold trainable weights only ---------------------------------------------
    def state_dict(self, *args, destination=None, prefix: str = "", keep_vars: bool = False):
        full = super().state_dict(*args, destination=destination, prefix=prefix, keep_vars=keep_vars)
        trainable = {prefix + name for name, p in self.named_parameters() if p.requires_grad}
        return type(full)((k, v) for k, v in full.items() if k in trainable)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.skipped_steps = int(checkpoint.get("dentvlm_skipped_steps", 0))
        state = checkpoint.get("state_dict")
        if state is None or self.model is None:
            return
        missing = [n for n, p in self.named_parameters() if p.requires_grad and n not in state]
        if missing:
            raise ValueError(f"checkpoint lacks {len(missing)} trainable weights (e.g. {missing[:3]}): it was made "
                           "with other fine-tuning settings (finetune/vision/lora_*) than this run")

    # ----- steps ----------------------------------------------------------------------------
    def loss_terms(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """(summed cross-entropy over the batch's label tokens, their count); padding rows have none."""
        inputs, labels = self._with_keepalive(model_inputs(batch, pixels=self.pixels, vision=self.vision),
                                              batch["labels"], left=False)
        with self._adapter_switch():
            return answer_loss(self.network, inputs, labels, batch.get("loss_positions"), batch.get("loss_pairs"))

    def _with_keepalive(self, inputs: dict, labels, left: bool):
        """Under FSDP2 on several ranks, a batch without images gets a masked dummy image (see
        `dentvlm.model.inputs`): every rank must run the vision tower's collectives."""
        config = getattr(self.network.config, "vision_config", None)
        if not (self._uses_fsdp() and self.trainer.world_size > 1 and config is not None):
            return inputs, labels
        image_token = self.tokenizer.convert_tokens_to_ids("<|image_pad|>")
        return with_vision_keepalive(inputs, labels, image_token, config, left)

    def _adapter_switch(self):
        if self.use_adapter:
            return contextlib.nullcontext()
        if not hasattr(self.model, "disable_adapter"):
            raise ValueError("the base-model baseline needs a LoRA run (model.finetune=lora); for full "
                             "fine-tuning, evaluate the base model with `dentvlm test` and no --ckpt_path")
        return self.model.disable_adapter()

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        """Returns the summed loss; `on_before_optimizer_step` divides the gradients by the label
        tokens of the whole optimizer step (every micro-batch on every rank; see `StepLoss`)."""
        loss, tokens = self.loss_terms(batch)
        self.step_loss.add(loss, tokens)
        self.log("train/loss", loss.detach() / tokens.clamp(min=1), batch_size=len(batch["meta"]))
        return loss

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        if batch_idx % self.trainer.accumulate_grad_batches == 0:  # a new optimizer step begins
            self.step_loss.start(self.device)

    def on_before_optimizer_step(self, optimizer) -> None:
        # A gradient scaler (16-mixed) skips fp16 overflow steps itself and lowers its scale.
        scaled = getattr(self.trainer.precision_plugin, "scaler", None) is not None
        loss = self.step_loss.scale_gradients(self.parameters(), self.trainer.accumulate_grad_batches,
                                              self._data_parallel_size(), check_gradients=not scaled)
        if loss is None:
            self._skip_step()
            return
        self.log("loss", loss, prog_bar=True, logger=False)  # a host float: the bar costs no device sync

    def _skip_step(self) -> None:
        """Count a skipped optimizer step (its gradients are already dropped: the optimizer leaves every
        weight as it was); stop the run past `max_skipped_steps`."""
        self.skipped_steps += 1
        step, reason = self.global_step + 1, self.step_loss.reason()
        self.log("train/skipped_steps", float(self.skipped_steps), logger=True, on_step=True, on_epoch=False)
        if self.skipped_steps > self.hparams.max_skipped_steps:
            raise FloatingPointError(
                f"optimizer step {step} skipped for {reason}, {self.skipped_steps} skipped steps in all (over "
                f"model.max_skipped_steps {self.hparams.max_skipped_steps}); lower model.learning_rate, check the "
                "data, or use float32/bf16")
        self.print(f"dentvlm: optimizer step {step} skipped for {reason} ({self.skipped_steps} of at most "
                   f"{self.hparams.max_skipped_steps})")

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["dentvlm_skipped_steps"] = self.skipped_steps

    def validation_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> dict:
        return self._eval_step("val", batch, batch_idx)

    def test_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> dict:
        return self._eval_step("test", batch, batch_idx)

    def _eval_step(self, stage: str, batch: dict, batch_idx: int) -> dict:
        # Every rank runs the same forwards whatever its batch holds (an all-padding batch has no
        # label tokens and a zero loss): under FSDP2 a skipped forward would hang the other ranks.
        task = batch["meta"][0]["task"]
        if stage == "test" and batch["meta"][0].get("role") == "val":  # checkups that choose thresholds
            return {"predictions": self.threshold_predictions(batch)}
        loss, tokens = self.loss_terms(batch)
        name = metric_name(stage, task, "loss", self.variant)
        metric, attribute = self._loss_metric(name)
        metric.update(loss, tokens)
        self.log(name, metric, batch_size=batch["input_ids"].shape[0], add_dataloader_idx=False,
                 metric_attribute=attribute)
        generate = stage == "test" or batch_idx < self._generation_batches()  # test: every sample
        predictions = self.predictions(batch, score=stage == "test") if generate else []
        return {"loss": loss, "predictions": predictions}

    def _loss_metric(self, name: str) -> tuple[TokenMeanLoss, str]:
        """A token-weighted mean per stage and task, made on first use; returns it and its attribute path."""
        key = name.replace("/", "__")
        if key not in self.eval_loss:
            self.eval_loss[key] = TokenMeanLoss().to(self.device)
        return self.eval_loss[key], f"eval_loss.{key}"

    def _generation_batches(self) -> int:
        """Batches per rank to generate for: the same on every rank (generation is collective under
        FSDP), so it comes from the configured batch size, never from a batch's own rows (a worker's
        last batch may be short, and which one is differs between ranks)."""
        samples, batch_size = self.hparams.generate_samples, self._eval_batch_size()
        if samples < 0 or not batch_size:
            return math.inf
        return math.ceil(samples / (batch_size * self.trainer.world_size))

    def _eval_batch_size(self) -> int | None:
        """The configured rows of an evaluation batch (data.eval_batch_size, else data.batch_size)."""
        hparams = getattr(self.trainer.datamodule, "hparams", {})
        return hparams.get("eval_batch_size") or hparams.get("batch_size")

    # ----- generation -----------------------------------------------------------------------
    @contextlib.contextmanager
    def _inference(self, batch: dict):
        """The batch's generation inputs (left-padded prompts), and whether forwards must stay in step across
        ranks, for calls outside `forward` (generation, class scoring) within one set-up: under FSDP2 on
        several ranks the parameters are gathered once for the whole block (`gather_for_generation`), else
        every forward is collective and a batch without images gets a keep-alive image; the base-model
        baselines run with the adapter off."""
        sharded = self._uses_fsdp() and self.trainer.world_size > 1
        gathered = sharded and self.hparams.gather_for_generation
        inputs = model_inputs(batch, generation=True, pixels=self.pixels)
        if sharded:
            prepare_for_calls_outside_forward(self.network)
        if sharded and not gathered:  # every forward is collective: the vision tower must run everywhere
            inputs, _ = self._with_keepalive(inputs, None, left=True)
        with self._adapter_switch(), gathered_parameters(self.network, gathered):
            yield inputs, sharded and not gathered

    @torch.no_grad()
    def generate(self, batch: dict) -> list[str]:
        """Answers for the batch's generation prompts (left-padded, KV-cached), with exactly the
        configured settings (`generation_config`)."""
        with self._inference(batch) as (inputs, in_step):
            return self._generate(inputs, in_step)

    def _generate(self, inputs: dict, in_step: bool) -> list[str]:
        # Sharded forwards are collective, so every rank must run as many as the longest answer; with the
        # parameters gathered for the whole call, each rank stops when its batch is done.
        output = self.network.generate(**inputs, synced_gpus=in_step)
        return self.tokenizer.batch_decode(output[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)

    @torch.no_grad()
    def predictions(self, batch: dict, score: bool = False) -> list[Prediction]:
        """Generated answers as `Prediction`s, with class probabilities when `score` (classification);
        padding rows are generated (collectives) but dropped. Generation and scoring share one set-up
        (inputs made once, parameters gathered once)."""
        with self._inference(batch) as (inputs, in_step):
            answers = self._generate(inputs, in_step)
            scored = self._class_scores(batch, inputs) if score and self._scores_classes(batch) else None
        return self._as_predictions(batch, answers, scored)

    @torch.no_grad()
    def threshold_predictions(self, batch: dict) -> list[Prediction]:
        """Class probabilities of checkups that only choose operating thresholds (no answer generated)."""
        if not self._scores_classes(batch):
            return []
        with self._inference(batch) as (inputs, _):
            scored = self._class_scores(batch, inputs)
        return self._as_predictions(batch, [""] * len(batch["meta"]), scored)

    def _as_predictions(self, batch: dict, answers: list[str], scored: list[dict] | None) -> list[Prediction]:
        prompts = self.tokenizer.batch_decode(batch["gen_input_ids"], skip_special_tokens=True)
        return [
            Prediction(key=m["key"], task=m["task"], prompt=p, reference=m["target"], generated=a.strip(),
                       true_labels=list(m["labels"]), thumbnail=m.get("thumbnail"),
                       class_probabilities=scored[row] if scored is not None else None,
                       split=m.get("role", "test"), groups=dict(m.get("groups", {})))
            for row, (m, p, a, pad) in enumerate(zip(batch["meta"], prompts, answers, batch["is_padding"].tolist()))
            if not pad
        ]

    def _scores_classes(self, batch: dict) -> bool:
        return bool(self.hparams.score_classes) and batch["meta"][0]["task"] == "classification"

    def _class_scores(self, batch: dict, inputs: dict) -> list[dict[str, float]]:
        """Per row, each class's probability (`dentvlm.model.scoring`), from the batch's generation `inputs`
        (made by `_inference`, within which this runs). Collective under FSDP2 like generation."""
        datamodule = self.trainer.datamodule
        hp = datamodule.hparams
        key = (datamodule.classes, hp.multi_label, hp.none_answer)
        if key not in self._answer_sets:
            self._answer_sets[key] = answer_sets(*key, self.tokenizer)
        scores = score_answers(self.network, inputs, self._answer_sets[key], max_rows=self._eval_batch_size())
        probabilities, _ = class_probabilities(scores, self._answer_sets[key])
        return [dict(zip(datamodule.classes, row)) for row in probabilities.tolist()]

    # ----- optimisation -----------------------------------------------------------------------
    def configure_optimizers(self):
        from transformers import get_cosine_with_min_lr_schedule_with_warmup

        hp = self.hparams
        params = [p for p in self.parameters() if p.requires_grad]
        if not params:
            raise ValueError("no trainable parameters: check model.finetune / model.vision / model.lora_target")
        # foreach: every tensor updated by a few multi-tensor ops, not ~10 small ops per tensor from a
        # Python loop (torch's default on the CPU; CUDA, DTensors included, already defaults to it).
        # Not `fused`: Lightning refuses gradient clipping with an optimizer that unscales itself.
        optimizer = torch.optim.AdamW(params, lr=hp.learning_rate, weight_decay=hp.weight_decay, foreach=True)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        scheduler = get_cosine_with_min_lr_schedule_with_warmup(
            optimizer, num_warmup_steps=math.ceil(hp.warmup_ratio * total), num_training_steps=total,
            min_lr_rate=hp.min_lr_ratio,
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
