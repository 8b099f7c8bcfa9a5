"""The peer benchmark's data: dentvlm's training split as ShareGPT JSON, and the checks that every
tool sees the same prompt.

The export goes through dentvlm's own reading path (`ExampleMaker` -> `format_checkup`), so the
peers get exactly the messages dentvlm trains on; the chosen shard images are written to files
byte for byte, so every tool decodes the same JPEG data.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from dentvlm.data.datamodule import DentDataModule, ExampleMaker, HasTask
from dentvlm.data.shards import iter_shard
from dentvlm.data.tasks import Example, select_images, task_variant

DATASET_NAME = "dentvlm_demo"
DATASET_FILE = "train.json"
IMAGE_PLACEHOLDER = "<image>"  # LLaMA-Factory's (and dentvlm's ShareGPT reader's) image placeholder

# LLaMA-Factory 0.9.5's `qwen2_vl` template (src/llamafactory/data/template.py), the slots it renders
# a one-turn conversation with; its Qwen2-VL plugin then puts each image's tokens in place of <image>.
QWEN2_VL_SYSTEM = "<|im_start|>system\n{content}<|im_end|>\n"
QWEN2_VL_USER = "<|im_start|>user\n{content}<|im_end|>\n<|im_start|>assistant\n"
QWEN2_VL_ASSISTANT = "{content}<|im_end|>\n"
QWEN2_VL_DEFAULT_SYSTEM = "You are a helpful assistant."
QWEN2_VL_IMAGE = "<|vision_start|><|image_pad|><|vision_end|>"


@dataclass
class Exported:
    """One exported training example: dentvlm's formatted example and its ShareGPT record."""

    example: Example
    record: dict


def example_maker(data: DentDataModule, task: str) -> ExampleMaker:
    """The training-time example maker of `data` without an encoder (what the stream would build)."""
    hp = data.hparams
    return ExampleMaker(task, data.classes, hp.multi_label, hp.modality, tuple(hp.image_modalities), hp.max_images,
                        hp.decode_long_side, encoder=None, training=True, none_answer=hp.none_answer)


def sharegpt_record(example: Example, image_paths: list[str]) -> dict:
    """LLaMA-Factory's ShareGPT ("messages") record of a one-turn example: image parts become <image>."""
    user, assistant = example.messages
    if user["role"] != "user" or assistant["role"] != "assistant":
        raise ValueError(f"{example.key}: expected one user turn and one answer")
    text = "".join(IMAGE_PLACEHOLDER if part["type"] == "image" else part["text"] for part in user["content"])
    if text.count(IMAGE_PLACEHOLDER) != len(image_paths):
        raise ValueError(f"{example.key}: the prompt text holds {IMAGE_PLACEHOLDER!r} itself")
    return {"messages": [{"role": "user", "content": text}, {"role": "assistant", "content": example.target}],
            "images": image_paths}


def export_sharegpt(shards: Path, out: Path, task: str = "classification", split: str = "train",
                    max_images: int = 8) -> list[Exported]:
    """Write `split` of `shards`, formatted for `task` as dentvlm trains on it, to `out`: train.json
    (ShareGPT), images/<key>.img<i>.jpg (the shard's bytes) and LLaMA-Factory's dataset_info.json."""
    data = DentDataModule(shards=str(shards), task=task, max_images=max_images)
    maker = example_maker(data, task)
    eligible = HasTask(task_variant(task, data.hparams.multi_label), data.classes)
    (out / "images").mkdir(parents=True, exist_ok=True)
    exported = []
    for shard in data.manifest["splits"][split]["shards"]:
        for sample in iter_shard(shards / shard["file"], shard["samples"], shard["sha256"]):
            if not eligible(sample):
                continue
            paths = []
            for index in select_images(sample.checkup, maker.image_modalities, maker.max_images):
                path = f"images/{sample.checkup.key}.img{index}.jpg"
                (out / path).write_bytes(sample.images[index])
                paths.append(path)
            example = maker.example(sample)
            exported.append(Exported(example, sharegpt_record(example, paths)))
    (out / DATASET_FILE).write_text(json.dumps([e.record for e in exported], indent=1, ensure_ascii=False))
    info = {DATASET_NAME: {"file_name": DATASET_FILE, "formatting": "sharegpt",
                           "columns": {"messages": "messages", "images": "images"},
                           "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                                    "assistant_tag": "assistant"}}}
    (out / "dataset_info.json").write_text(json.dumps(info, indent=1))
    return exported


def qwen2_vl_text(record: dict) -> str:
    """The text LLaMA-Factory's `qwen2_vl` template renders for a one-turn ShareGPT record (before
    each image placeholder is widened to the image's tokens)."""
    user, assistant = record["messages"]
    text = (QWEN2_VL_SYSTEM.format(content=QWEN2_VL_DEFAULT_SYSTEM) + QWEN2_VL_USER.format(content=user["content"])
            + QWEN2_VL_ASSISTANT.format(content=assistant["content"]))
    return text.replace(IMAGE_PLACEHOLDER, QWEN2_VL_IMAGE)


def check_rendering(exported: list[Exported], processor) -> None:
    """dentvlm's chat template must render each example as LLaMA-Factory's qwen2_vl template does."""
    for item in exported:
        ours = processor.apply_chat_template(item.example.messages, tokenize=False)
        theirs = qwen2_vl_text(item.record)
        if ours != theirs:
            raise AssertionError(f"{item.example.key}: dentvlm renders\n{ours!r}\nLLaMA-Factory's qwen2_vl renders\n"
                                 f"{theirs!r}")


def compare_tokens(tool: str, ours: list[tuple[list[int], list[int]]], theirs: dict, newline_id: int,
                   turn_end_id: int) -> str:
    """Check a peer's token ids equal dentvlm's, example by example, and that its labels are
    dentvlm's plus only the newline after the answer's <|im_end|>; returns a one-line summary."""
    if len(theirs["input_ids"]) != len(ours):
        raise AssertionError(f"{tool} made {len(theirs['input_ids'])} examples, dentvlm {len(ours)}")
    extra = 0
    for index, ((ids, labels), their_ids, their_labels) in enumerate(zip(ours, theirs["input_ids"],
                                                                          theirs["labels"])):
        if list(their_ids) != list(ids):
            raise AssertionError(f"{tool}: example {index} has other token ids than dentvlm's")
        for position, (mine, other) in enumerate(zip(labels, their_labels)):
            if mine == other:
                continue
            after_turn_end = position > 0 and ids[position - 1] == turn_end_id and labels[position - 1] != -100
            if not (mine == -100 and other == newline_id and after_turn_end):
                raise AssertionError(f"{tool}: example {index} position {position}: label {other}, dentvlm {mine}")
            extra += 1
    label_tokens = sum(sum(label != -100 for label in labels) for _, labels in ours)
    return (f"{tool}: token ids identical to dentvlm's for all {len(ours)} examples; labels identical except "
            f"{extra} newline(s) after <|im_end|> ({label_tokens} dentvlm label tokens)")
