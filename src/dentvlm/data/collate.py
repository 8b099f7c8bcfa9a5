"""Processor-based encoding and batch padding for Qwen-VL chat examples.

The model's own processor and chat template build the inputs, so a real 7B and the tiny model go
through the same code. `labels` cover the assistant answers only (and their end-of-turn token):
prompt, image and pad positions are -100. The prompt of the last answer is a prefix of the full
sequence, so one encoding serves both the loss (right padding) and generation (left padding).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from dentvlm.data.tasks import Example

IGNORE_INDEX = -100
log = logging.getLogger(__name__)


@dataclass
class Encoded:
    """One encoded example; tensors are unbatched.

    Attributes:
        input_ids: (L,) token ids of the whole conversation, answer included.
        label_ids: (L,) training targets; -100 outside assistant answers.
        mm_token_type_ids: (L,) 1 at image tokens, else 0 (Qwen-VL needs it for 3D positions).
        prompt_len: Tokens before the last answer (the generation prompt).
        pixel_values: (patches, patch_dim) for all images, or None without images.
        image_grid_thw: (images, 3) patch grid per image, or None.
    """

    key: str
    task: str
    target: str
    labels: list[str]
    is_padding: bool
    thumbnail: bytes | None
    input_ids: torch.Tensor
    label_ids: torch.Tensor
    mm_token_type_ids: torch.Tensor
    prompt_len: int
    pixel_values: torch.Tensor | None
    image_grid_thw: torch.Tensor | None

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])


class Overlong(ValueError):
    """An example longer than the cutoff that cannot be shortened without cutting an image block."""


class ChatEncoder:
    """Turns `Example`s into `Encoded` with a Hugging Face processor.

    Args:
        processor: A Qwen-VL style processor (tokenizer + image processor + chat template).
        cutoff_len: Maximum tokens per example. Longer examples are cut at the end when the cut
            falls after the last image and inside the answer; otherwise `overflow` decides.
        overflow: "drop" (skip the example, logged; padding keeps batch counts even) or "error".
        min_pixels: Lower bound on pixels per image after the processor's resize.
        max_pixels: Upper bound on pixels per image (bounds image tokens: pixels / 28^2).
    """

    def __init__(self, processor, cutoff_len: int = 4096, overflow: str = "drop",
                 min_pixels: int | None = None, max_pixels: int | None = None):
        if overflow not in ("drop", "error"):
            raise ValueError(f"overflow must be 'drop' or 'error', got {overflow!r}")
        self.processor, self.cutoff_len, self.overflow = processor, cutoff_len, overflow
        self.image_kwargs = {}
        if min_pixels or max_pixels:
            current = processor.image_processor.size
            self.image_kwargs["size"] = {
                "shortest_edge": min_pixels or current["shortest_edge"],
                "longest_edge": max_pixels or current["longest_edge"],
            }
        tokenizer = processor.tokenizer
        self.answer_start = tokenizer.encode("<|im_start|>assistant\n", add_special_tokens=False)
        self.turn_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
        self.vision_end = tokenizer.convert_tokens_to_ids("<|vision_end|>")
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.turn_end

    def __call__(self, example: Example) -> Encoded | None:
        """Encode; returns None for a dropped over-long example (overflow="drop")."""
        try:
            return self.encode(example)
        except Overlong as exc:
            if self.overflow == "error":
                raise
            log.warning("dropped %s", exc)
            return None

    def encode(self, example: Example) -> Encoded:
        text = self.processor.apply_chat_template(example.messages, tokenize=False)
        features = self.processor(
            text=[text], images=example.images or None, return_tensors="pt", **self.image_kwargs
        )
        input_ids = features["input_ids"][0]
        label_ids, prompt_len = self._answer_labels(input_ids, example.key, every_turn=example.task == "chat")
        mm_types = features.get("mm_token_type_ids")
        mm_types = mm_types[0] if mm_types is not None else torch.zeros_like(input_ids)
        if len(input_ids) > self.cutoff_len:
            input_ids, label_ids, mm_types = self._truncate(input_ids, label_ids, mm_types, prompt_len, example.key)
        return Encoded(
            key=example.key, task=example.task, target=example.target, labels=example.labels,
            is_padding=example.is_padding, thumbnail=example.thumbnail, input_ids=input_ids, label_ids=label_ids,
            mm_token_type_ids=mm_types, prompt_len=prompt_len,
            pixel_values=features.get("pixel_values"), image_grid_thw=features.get("image_grid_thw"),
        )

    def _answer_labels(self, input_ids: torch.Tensor, key: str, every_turn: bool) -> tuple[torch.Tensor, int]:
        """Labels for the last assistant answer (every answer of a chat; few-shot demonstrations are
        prompt); returns them and where the last answer starts."""
        ids = input_ids.tolist()
        width = len(self.answer_start)
        labels = torch.full_like(input_ids, IGNORE_INDEX)
        starts = [i + width for i in range(len(ids) - width + 1) if ids[i : i + width] == self.answer_start]
        if not starts:
            raise ValueError(f"{key}: no assistant turn found in the encoded chat (chat template mismatch?)")
        for start in starts if every_turn else starts[-1:]:
            end = start
            while end < len(ids) and ids[end] != self.turn_end:
                end += 1
            labels[start : end + 1] = input_ids[start : end + 1]  # the answer and its <|im_end|>
        return labels, starts[-1]

    def _truncate(self, input_ids, label_ids, mm_types, prompt_len: int, key: str):
        cut = self.cutoff_len
        vision_ends = (input_ids == self.vision_end).nonzero()
        last_image_end = int(vision_ends[-1]) if len(vision_ends) else -1
        if prompt_len >= cut or last_image_end >= cut:
            raise Overlong(
                f"{key}: {len(input_ids)} tokens, prompt {prompt_len}, over cutoff_len={cut}; "
                "cutting would split an image block or remove the whole answer (raise cutoff_len or lower "
                "max_pixels / max_images)"
            )
        return input_ids[:cut], label_ids[:cut], mm_types[:cut]


def pad_batch(items: list[Encoded], pad_id: int) -> dict:
    """Collate encoded examples: right-padded training inputs and left-padded generation prompts."""
    longest = max(len(item) for item in items)
    longest_prompt = max(item.prompt_len for item in items)
    batch: dict = {
        "input_ids": torch.full((len(items), longest), pad_id, dtype=torch.long),
        "attention_mask": torch.zeros((len(items), longest), dtype=torch.long),
        "labels": torch.full((len(items), longest), IGNORE_INDEX, dtype=torch.long),
        "mm_token_type_ids": torch.zeros((len(items), longest), dtype=torch.long),
        "gen_input_ids": torch.full((len(items), longest_prompt), pad_id, dtype=torch.long),
        "gen_attention_mask": torch.zeros((len(items), longest_prompt), dtype=torch.long),
        "gen_mm_token_type_ids": torch.zeros((len(items), longest_prompt), dtype=torch.long),
    }
    for row, item in enumerate(items):
        n, p = len(item), item.prompt_len
        batch["input_ids"][row, :n] = item.input_ids
        batch["attention_mask"][row, :n] = 1
        batch["mm_token_type_ids"][row, :n] = item.mm_token_type_ids
        batch["labels"][row, :n] = item.label_ids  # padding rows too: training learns from them
        batch["gen_input_ids"][row, longest_prompt - p :] = item.input_ids[:p]
        batch["gen_attention_mask"][row, longest_prompt - p :] = 1
        batch["gen_mm_token_type_ids"][row, longest_prompt - p :] = item.mm_token_type_ids[:p]
    pixels = [item.pixel_values for item in items if item.pixel_values is not None]
    if pixels:
        batch["pixel_values"] = torch.cat(pixels)
        batch["image_grid_thw"] = torch.cat([item.image_grid_thw for item in items if item.image_grid_thw is not None])
    batch["is_padding"] = torch.tensor([item.is_padding for item in items])
    batch["meta"] = [
        {"key": i.key, "task": i.task, "target": i.target, "labels": i.labels, "thumbnail": i.thumbnail}
        for i in items
    ]
    return batch


class BatchCollator:
    """DataLoader `collate_fn`: pads `Encoded` items with the tokenizer's pad id."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, items: list[Encoded]) -> dict:
        return pad_batch(items, self.pad_id)
