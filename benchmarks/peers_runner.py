"""The peers' side of `benchmarks/peers.py`: runs inside LLaMA-Factory's or TRL's own virtual environment.

    python peers_runner.py {llamafactory,trl} {train,check} SPEC.json OUT.json

`train` fine-tunes with the tool's own trainer and writes per-step timestamps, samples, padded and
real tokens, losses and the trainable parameter count to OUT.json. `check` writes the token ids and
labels the tool makes of every exported example (no training), for `peers.py` to compare with
dentvlm's. Only the standard library is imported at the top: the rest comes from the peer's venv.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from pathlib import Path


def tree_cpu_seconds() -> float:
    """CPU seconds (user + system) of this process, its joined children and its live children (the
    DataLoader worker): less disturbed by other jobs on the machine than wall time. Linux /proc."""
    times = os.times()
    total = times.user + times.system + times.children_user + times.children_system
    me, tick = os.getpid(), os.sysconf("SC_CLK_TCK")
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()  # from field 3 (state): ppid, ..., utime, stime
        if int(fields[1]) == me:
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def step_record(step: int, warmup: int, steps: int, pending: dict) -> dict:
    """A step's record: its end time and batch figures; CPU time at the end of the warm-up and of the
    last step only (reading /proc takes milliseconds)."""
    record = {"time": time.time(), **pending}
    if step in (warmup, steps):
        record["cpu"] = tree_cpu_seconds()
    return record


class Recorder:
    """Per-step records, filled by a patched `Trainer.training_step` (the batch) and a callback
    (the time after the optimizer step)."""

    def __init__(self, warmup: int, steps: int):
        self.warmup, self.total = warmup, steps
        self.steps: list[dict] = []
        self.pending: dict = {}
        self.trainable = 0
        self.dtype = ""

    def patch(self, trainer_class) -> None:
        original = trainer_class.training_step
        recorder = self

        def training_step(trainer, model, inputs, *args, **kwargs):
            mask = inputs["attention_mask"]
            recorder.pending = {"samples": int(mask.shape[0]), "real": int(mask.sum()), "slots": int(mask.numel())}
            loss = original(trainer, model, inputs, *args, **kwargs)
            recorder.pending["loss"] = float(loss)
            return loss

        trainer_class.training_step = training_step

    def callback(self):
        from transformers import TrainerCallback

        recorder = self

        class StepClock(TrainerCallback):
            def on_train_begin(self, args, state, control, model=None, **kwargs):
                params = [p for p in model.parameters() if p.requires_grad]
                recorder.trainable = sum(p.numel() for p in params)
                recorder.dtype = str(params[0].dtype) if params else ""

            def on_step_end(self, args, state, control, **kwargs):
                recorder.steps.append(step_record(len(recorder.steps) + 1, recorder.warmup, recorder.total,
                                                  recorder.pending))

        return StepClock()


def llamafactory_args(spec: dict, grouped: bool) -> dict:
    """LLaMA-Factory's training arguments for the matched settings (its other defaults stay)."""
    args = {
        "stage": "sft", "do_train": True, "finetuning_type": "lora",
        "model_name_or_path": spec["model"], "template": "qwen2_vl", "trust_remote_code": False,
        "dataset": "dentvlm_demo", "dataset_dir": spec["dataset_dir"], "media_dir": spec["dataset_dir"],
        "cutoff_len": spec["cutoff_len"], "overwrite_cache": True, "val_size": 0,
        "image_min_pixels": spec["min_pixels"], "image_max_pixels": spec["max_pixels"],
        "lora_rank": spec["lora_rank"], "lora_alpha": spec["lora_alpha"], "lora_dropout": 0.0, "lora_target": "all",
        "freeze_vision_tower": True, "freeze_multi_modal_projector": True,
        "disable_gradient_checkpointing": True,
        "output_dir": spec["output_dir"], "overwrite_output_dir": True, "save_strategy": "no", "report_to": "none",
        "per_device_train_batch_size": spec["batch_size"], "gradient_accumulation_steps": 1,
        "max_steps": spec["steps"], "learning_rate": spec["learning_rate"], "lr_scheduler_type": "cosine",
        "warmup_steps": 0, "weight_decay": 0.0, "max_grad_norm": 1.0, "bf16": False, "fp16": False,
        "dataloader_num_workers": spec["num_workers"], "logging_steps": 10, "seed": spec["seed"], "plot_loss": False,
    }
    if grouped:
        args["train_sampling_strategy"] = "group_by_length"
    return args


def run_llamafactory(spec: dict, grouped: bool) -> dict:
    import transformers

    recorder = Recorder(spec["warmup"], spec["steps"])
    recorder.patch(transformers.Trainer)
    from llamafactory.train.tuner import run_exp

    run_exp(llamafactory_args(spec, grouped), callbacks=[recorder.callback()])
    return {"steps": recorder.steps, "trainable": recorder.trainable, "dtype": recorder.dtype}


def check_llamafactory(spec: dict) -> dict:
    """LLaMA-Factory's own preprocessing of the exported JSON: token ids and labels per example."""
    from llamafactory.data import get_dataset, get_template_and_fix_tokenizer
    from llamafactory.hparams import get_train_args
    from llamafactory.model import load_tokenizer

    model_args, data_args, training_args, _, _ = get_train_args(llamafactory_args(spec, grouped=False))
    tokenizer_module = load_tokenizer(model_args)
    template = get_template_and_fix_tokenizer(tokenizer_module["tokenizer"], data_args)
    dataset = get_dataset(template, model_args, data_args, training_args, stage="sft", **tokenizer_module)
    return dataset["train_dataset"].select_columns(["input_ids", "labels"]).to_dict()


def content_parts(text: str) -> list[dict]:
    """A ShareGPT turn's text as chat-template content parts, an image part at each ``<image>``."""
    parts: list[dict] = []
    for index, piece in enumerate(text.split("<image>")):
        if index:
            parts.append({"type": "image"})
        if piece:
            parts.append({"type": "text", "text": piece})
    return parts


def trl_dataset(spec: dict):
    """The exported ShareGPT examples as a TRL prompt-completion dataset (images decoded on access)."""
    from datasets import Dataset, Image, Sequence

    records = []
    for example in json.loads(Path(spec["dataset_dir"], spec["dataset_file"]).read_text()):
        *prompt, answer = [{"role": m["role"], "content": content_parts(m["content"])} for m in example["messages"]]
        images = [str(Path(spec["dataset_dir"], path)) for path in example["images"]]
        records.append({"prompt": prompt, "completion": [answer], "images": images})
    return Dataset.from_list(records).cast_column("images", Sequence(Image()))


class TokenTypes:
    """TRL 0.24's vision collator takes `mm_token_type_ids` from the prompt-only encoding (left
    padded, prompt length) under transformers 5, which breaks Qwen2.5-VL's rope index: rebuild it
    from the image token positions of the final input_ids."""

    def __init__(self, collator, image_token_id: int):
        self.collator, self.image_token_id = collator, image_token_id

    def __call__(self, examples):
        batch = self.collator(examples)
        if "mm_token_type_ids" in batch:
            batch["mm_token_type_ids"] = (batch["input_ids"] == self.image_token_id).long()
        return batch


def trl_trainer(spec: dict, recorder: Recorder | None):
    import torch
    from peft import LoraConfig
    from transformers import AutoModelForImageTextToText, AutoProcessor
    from trl import SFTConfig, SFTTrainer
    from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

    processor = AutoProcessor.from_pretrained(spec["model"])
    model = AutoModelForImageTextToText.from_pretrained(spec["model"], dtype=torch.float32)
    vision = model.model.visual
    targets = [name for name, module in model.named_modules()
               if isinstance(module, torch.nn.Linear) and not name.endswith("lm_head")
               and not any(module is m for m in vision.modules())]
    config = SFTConfig(
        output_dir=spec["output_dir"], per_device_train_batch_size=spec["batch_size"], gradient_accumulation_steps=1,
        max_steps=spec["steps"], learning_rate=spec["learning_rate"], lr_scheduler_type="cosine", warmup_steps=0,
        weight_decay=0.0, max_grad_norm=1.0, bf16=False, fp16=False, gradient_checkpointing=False,
        dataloader_num_workers=spec["num_workers"], logging_steps=10, save_strategy="no", report_to="none",
        seed=spec["seed"], max_length=spec["cutoff_len"],
    )
    collator = DataCollatorForVisionLanguageModeling(processor, max_length=config.max_length,
                                                     completion_only_loss=True)
    collator = TokenTypes(collator, model.config.image_token_id)
    peft_config = LoraConfig(r=spec["lora_rank"], lora_alpha=spec["lora_alpha"], lora_dropout=0.0,
                             target_modules=targets)
    callbacks = [recorder.callback()] if recorder else None
    trainer = SFTTrainer(model=model, args=config, train_dataset=trl_dataset(spec), processing_class=processor,
                         data_collator=collator, peft_config=peft_config, callbacks=callbacks)
    return trainer, collator


def run_trl(spec: dict) -> dict:
    import transformers

    recorder = Recorder(spec["warmup"], spec["steps"])
    recorder.patch(transformers.Trainer)
    trainer, _ = trl_trainer(spec, recorder)
    trainer.train()
    return {"steps": recorder.steps, "trainable": recorder.trainable, "dtype": recorder.dtype}


def check_trl(spec: dict) -> dict:
    """TRL's collator on each exported example alone: token ids and labels (no padding)."""
    trainer, collator = trl_trainer(spec, None)
    dataset = trainer.train_dataset
    ids, labels = [], []
    for index in range(len(dataset)):
        batch = collator([dataset[index]])
        ids.append(batch["input_ids"][0].tolist())
        labels.append(batch["labels"][0].tolist())
    return {"input_ids": ids, "labels": labels}


def main() -> None:
    tool, mode, spec_path, out_path = sys.argv[1:5]
    spec = json.loads(Path(spec_path).read_text())
    if mode == "check":
        result = check_llamafactory(spec) if tool == "llamafactory" else check_trl(spec)
    elif tool == "trl":
        result = run_trl(spec)
    else:
        result = run_llamafactory(spec, grouped=tool == "llamafactory-grouped")
    result["peak_rss_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    Path(out_path).write_text(json.dumps(result))


if __name__ == "__main__":
    main()
