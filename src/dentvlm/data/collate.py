"""Processor-based encoding and batch padding for Qwen-VL chat examples.

The model's own processor and chat template build the inputs, so a real 7B and the tiny model go
through the same code. `labels` cover the assistant answers only (and their end-of-turn token):
prompt, image and pad positions are -100, and so is every position of a padding row. The prompt of
the last answer is a prefix of the full sequence, so one encoding serves both the loss (right
padding) and generation (left padding).

Image resolution is chosen per sample (`ImageBudget`): all of a checkup's images and its text fit
`cutoff_len`, scaled down together when needed, never below `min_pixels`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch
from PIL import Image

from dentvlm.data.image_budget import ImageBudget, qwen_resize
from dentvlm.data.rope import rope_positions
from dentvlm.data.tasks import Example
from dentvlm.data.vision_plan import VisionGeometry, vision_plan
from dentvlm.data.wire import to_wire

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
        pixel_values: (patches, patch_dim) uint8 for all images (not yet rescaled or normalised), or None.
        image_grid_thw: (images, 3) patch grid per image, or None.
        image_tokens: Image tokens in `input_ids`.
        unscaled_image_tokens: Image tokens the images would take at max_pixels.
        scaled: The images were scaled below max_pixels so that the sample fits.
        truncated: The answer was cut at `cutoff_len` (training only; images never are).
        dropped_before: Samples dropped by the stream since the previous example (set by the stream).
        role: "train", "val" or "test" (see `Example.role`).
        groups: The checkup's subgroups (see `Example.groups`).
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
    image_tokens: int = 0
    unscaled_image_tokens: int = 0
    scaled: bool = False
    truncated: bool = False
    dropped_before: int = 0
    role: str = "test"
    groups: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])


class Overlong(ValueError):
    """An example that does not fit even with its images at min_pixels, and cannot be shortened
    without cutting an image block or the generation prompt."""


class ChatEncoder:
    """Turns `Example`s into `Encoded` with a Hugging Face processor.

    Args:
        processor: A Qwen-VL style processor (tokenizer + image processor + chat template).
        cutoff_len: Training length limit. Images are scaled down per sample (not below
            `min_pixels`) so that a sample fits; a training sample still too long is cut inside its
            answer when the cut falls after the last image, else `overflow` decides. Evaluation
            samples are never cut: they may pass `cutoff_len` up to `context_len`.
        overflow: "drop" (skip the training example, counted; padding keeps batch counts even) or "error".
        min_pixels: Lower bound on pixels per image (None: the processor's own).
        max_pixels: Upper bound on pixels per image (None: the processor's own); tokens = pixels / 28^2.
        context_len: Longest sequence the model takes (evaluation and few-shot prompts); None: cutoff_len.
        few_shot_max_pixels: Upper bound on pixels per image of few-shot demonstrations (None: max_pixels);
            they are scaled further down so that demonstrations and question fit `context_len`.
    """

    def __init__(self, processor, cutoff_len: int = 4096, overflow: str = "drop",
                 min_pixels: int | None = None, max_pixels: int | None = None, context_len: int | None = None,
                 few_shot_max_pixels: int | None = None):
        if overflow not in ("drop", "error"):
            raise ValueError(f"overflow must be 'drop' or 'error', got {overflow!r}")
        self.processor, self.cutoff_len, self.overflow = processor, cutoff_len, overflow
        self.context_len = max(context_len or cutoff_len, cutoff_len)
        image_processor = processor.image_processor
        size = image_processor.size
        self.budget = ImageBudget(
            factor=image_processor.patch_size * image_processor.merge_size,
            min_pixels=min_pixels or size["shortest_edge"], max_pixels=max_pixels or size["longest_edge"],
        )
        if self.budget.min_pixels > self.budget.max_pixels:
            raise ValueError(f"min_pixels {self.budget.min_pixels} is above max_pixels {self.budget.max_pixels}")
        self.few_shot_max_pixels = few_shot_max_pixels or self.budget.max_pixels
        tokenizer = processor.tokenizer
        self.answer_start = tokenizer.encode("<|im_start|>assistant\n", add_special_tokens=False)
        self.turn_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
        self.vision_end = tokenizer.convert_tokens_to_ids("<|vision_end|>")
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.turn_end

    def __call__(self, example: Example, training: bool = True) -> Encoded | None:
        """Encode; returns None for a dropped over-long training example (overflow="drop")."""
        try:
            return self.encode(example, training)
        except Overlong as exc:
            if self.overflow == "error" or not training:
                raise
            log.warning("dropped %s", exc)
            return None

    def encode(self, example: Example, training: bool = True) -> Encoded:
        text = self.processor.apply_chat_template(example.messages, tokenize=False)
        text_tokens = self._text_tokens(text, len(example.images))
        images, query_pixels, scaled = self._fit_images(example, text_tokens, training)
        # Images leave the worker as uint8 patches; the model normalises them on its device (PixelNormalizer).
        features = self.processor(text=[text], images=images or None, return_tensors="pt", do_rescale=False,
                                  do_normalize=False,
                                  size={"shortest_edge": self.budget.min_pixels, "longest_edge": query_pixels})
        input_ids = features["input_ids"][0]
        grid = features.get("image_grid_thw")
        merge = self.processor.image_processor.merge_size
        image_tokens = int(grid.prod(-1).sum()) // merge**2 if grid is not None else 0
        if len(input_ids) != text_tokens + image_tokens:  # the budget's arithmetic must be the processor's
            raise RuntimeError(f"{example.key}: processor made {len(input_ids)} tokens, the image budget expected "
                               f"{text_tokens + image_tokens}: its resize rule differs from dentvlm's qwen_resize")
        label_ids, prompt_len = self._answer_labels(input_ids, example.key, every_turn=example.task == "chat")
        mm_types = features.get("mm_token_type_ids")
        mm_types = mm_types[0] if mm_types is not None else torch.zeros_like(input_ids)
        limit = self.cutoff_len if training else self.context_len
        truncated = len(input_ids) > limit
        if truncated:
            if not training:
                raise Overlong(f"{example.key}: {len(input_ids)} tokens with images at min_pixels, over the "
                               f"model's context of {limit} tokens (lower max_images or few_shot)")
            input_ids, label_ids, mm_types = self._truncate(input_ids, label_ids, mm_types, prompt_len, example.key)
        return Encoded(
            key=example.key, task=example.task, target=example.target, labels=example.labels,
            is_padding=example.is_padding, thumbnail=example.thumbnail, role=example.role, groups=example.groups,
            input_ids=input_ids, label_ids=label_ids,
            mm_token_type_ids=mm_types, prompt_len=prompt_len,
            pixel_values=as_uint8(features.get("pixel_values")), image_grid_thw=grid,
            image_tokens=image_tokens, scaled=scaled, truncated=truncated,
            unscaled_image_tokens=self.budget.tokens([(image.height, image.width) for image in example.images]),
        )

    def sized(self, example: Example, training: bool = False) -> tuple[list[Image.Image], int]:
        """The example's images at the size `encode` gives them (the resolution the model sees), and
        the tokens `encode` will make, without running the image processor: to send the same images
        to another model, or to refuse an over-long request before it reaches a batch."""
        text_tokens = self._text_tokens(self.processor.apply_chat_template(example.messages, tokenize=False),
                                        len(example.images))
        images, pixels, _ = self._fit_images(example, text_tokens, training)
        sized = [self._resize(image, pixels) for image in images]
        return sized, text_tokens + self.budget.tokens([(image.height, image.width) for image in sized], pixels)

    def _text_tokens(self, text: str, images: int) -> int:
        """Tokens of `text` once each image placeholder (one token per image in the template) is gone."""
        return len(self.processor.tokenizer(text)["input_ids"]) - images

    def _fit_images(self, example: Example, text_tokens: int, training: bool) -> tuple[list[Image.Image], int, bool]:
        """The images to encode, the query images' max_pixels, and whether they were scaled down.

        The question's images share one bound: the largest that fits `cutoff_len` with the whole
        text (a training sample that cannot fit even at min_pixels goes on at min_pixels, to be cut
        inside its answer or dropped). Few-shot demonstrations (evaluation only) are resized here,
        at most `few_shot_max_pixels` and at most the question's bound, to fit `context_len`; when
        they cannot fit beside the question, all images share the largest bound that fits.
        """
        demos = example.demo_images
        query, shown = example.images[demos:], example.images[:demos]
        query_sizes = [(image.height, image.width) for image in query]
        query_text = text_tokens
        if demos:
            query_text = self._text_tokens(
                self.processor.apply_chat_template(example.messages[example.demo_messages:], tokenize=False),
                len(query))
        pixels = self.budget.fit(query_sizes, self.cutoff_len - query_text)
        if pixels is None:
            pixels = self.budget.min_pixels
        scaled = bool(query) and pixels < self.budget.max_pixels
        if not demos:
            return list(example.images), pixels, scaled
        demo_sizes = [(image.height, image.width) for image in shown]
        room = self.context_len - text_tokens - self.budget.tokens(query_sizes, pixels)
        demo_pixels = self.budget.fit(demo_sizes, room, upper=min(self.few_shot_max_pixels, pixels))
        if demo_pixels is None:  # no room left beside the question: every image shares one smaller bound
            pixels = demo_pixels = self.budget.fit(query_sizes + demo_sizes, self.context_len - text_tokens)
            scaled = bool(query)
            if pixels is None:
                raise Overlong(f"{example.key}: {len(example.images)} images of a few-shot prompt do not fit the "
                               f"model's context of {self.context_len} tokens even at min_pixels (lower data.few_shot)")
        resized = [self._resize(image, demo_pixels) for image in shown]
        return resized + list(query), pixels, scaled

    def _resize(self, image: Image.Image, max_pixels: int) -> Image.Image:
        """The image at the size the processor would give it under `max_pixels`, so that the
        processor (called with the question's larger bound) leaves it as it is."""
        height, width = qwen_resize(image.height, image.width, self.budget.factor, self.budget.min_pixels, max_pixels)
        return image.resize((width, height), Image.Resampling.BICUBIC)

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
                f"{key}: {len(input_ids)} tokens with images at min_pixels={self.budget.min_pixels}, prompt "
                f"{prompt_len}, over cutoff_len={cut}; cutting would split an image block or remove the whole "
                "answer (raise cutoff_len, or lower min_pixels / max_images)"
            )
        return input_ids[:cut], label_ids[:cut], mm_types[:cut]


def as_uint8(pixels: torch.Tensor | None) -> torch.Tensor | None:
    """Unnormalised patches as uint8 (some processors return them as whole-valued floats)."""
    if pixels is None or pixels.dtype == torch.uint8:
        return pixels
    return pixels.round().clamp(0, 255).to(torch.uint8)


def loss_positions(labels: torch.Tensor) -> torch.Tensor:
    """(K,) positions whose next token has a label in any row: the hidden states the model keeps
    (`logits_to_keep`) for the loss (see `dentvlm.model.loss`)."""
    return (labels[:, 1:] != IGNORE_INDEX).any(0).nonzero().flatten()


def loss_pairs(labels: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """(N,) indices into the flattened (rows, K) grid of `positions` whose next token has a label in
    *that* row: only these are projected onto the vocabulary. The union of positions alone would
    project every row at every row's answer positions (8 report rows x ~200 answer tokens: ~1,600
    positions x 152 k words per row, ~20 GB per forward at 7B)."""
    return (labels[:, positions + 1] != IGNORE_INDEX).flatten().nonzero().flatten()


def pad_batch(items: list[Encoded], pad_id: int, merge: int | None = None) -> dict:
    """Collate encoded examples: right-padded training inputs (with their 3D rope `position_ids`
    when `merge` is given, so that a Qwen2/2.5-VL model need not compute them on the host) and
    left-padded generation prompts.

    Padding rows (repeats that only even out batch counts across ranks) keep their inputs, so every
    rank runs the same forward passes, but their labels are all -100: they never train or score.
    """
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
        if not item.is_padding:
            batch["labels"][row, :n] = item.label_ids
        batch["gen_input_ids"][row, longest_prompt - p :] = item.input_ids[:p]
        batch["gen_attention_mask"][row, longest_prompt - p :] = 1
        batch["gen_mm_token_type_ids"][row, longest_prompt - p :] = item.mm_token_type_ids[:p]
    # here, on the CPU: no device sync per step
    batch["loss_positions"] = loss_positions(batch["labels"])
    batch["loss_pairs"] = loss_pairs(batch["labels"], batch["loss_positions"])
    if merge is not None:
        batch["position_ids"] = torch.zeros((3, len(items), longest), dtype=torch.long)
        for row, item in enumerate(items):
            batch["position_ids"][:, row, : len(item)] = rope_positions(item.mm_token_type_ids, item.image_grid_thw,
                                                                       merge)
    return {**batch, **batch_extras(items)}


def batch_extras(items: list[Encoded]) -> dict:
    """What every collated batch carries besides its token tensors: the images, which rows are
    padding, data statistics and the per-sample metadata the metrics need."""
    extras: dict = {}
    pixels = [item.pixel_values for item in items if item.pixel_values is not None]
    if pixels:
        extras["pixel_values"] = torch.cat(pixels)
        extras["image_grid_thw"] = torch.cat([item.image_grid_thw for item in items if item.image_grid_thw is not None])
    extras["is_padding"] = torch.tensor([item.is_padding for item in items])
    # Data statistics travel with the batch (encoding runs in worker processes) for the monitor to log.
    extras["stats"] = {
        "image_tokens": torch.tensor([item.image_tokens for item in items]),
        "scaled": torch.tensor([item.scaled and not item.is_padding for item in items]),
        "truncated": torch.tensor([item.truncated and not item.is_padding for item in items]),
        "dropped": torch.tensor(sum(item.dropped_before for item in items)),
        "tokens": torch.tensor(sum(len(item) for item in items)),
    }
    extras["meta"] = [
        {"key": i.key, "task": i.task, "target": i.target, "labels": i.labels, "thumbnail": i.thumbnail,
         "role": i.role, "groups": i.groups}
        for i in items
    ]
    return extras


class BatchCollator:
    """DataLoader `collate_fn`: pads `Encoded` items with the tokenizer's pad id, or, with `packing`
    (training only), concatenates them into one row (`dentvlm.data.packing`).

    Args:
        pad_id: The tokenizer's pad token id.
        packing: Pack each batch into one padding-free row.
        merge: The vision merge size (Qwen-VL: 2) when the model's rope positions are computed here
            (`dentvlm.data.rope`); None leaves them to the model (and rules out packing).
        vision: Qwen2.5-VL's vision geometry: the batch carries the vision tower's index tensors
            (`dentvlm.data.vision_plan`); None leaves them to the model.
        wire: Hand the batch over as a `WireBatch` (a few buffers in shared memory; for worker processes).
    """

    def __init__(self, pad_id: int, packing: bool = False, merge: int | None = 2,
                 vision: VisionGeometry | None = None, wire: bool = False):
        if packing and merge is None:
            raise ValueError("data.packing needs per-sample rope positions, which dentvlm computes for "
                             "Qwen2-VL and Qwen2.5-VL only")
        self.pad_id, self.packing, self.merge, self.vision, self.wire = pad_id, packing, merge, vision, wire

    def __call__(self, items: list[Encoded]):
        if not self.packing:
            batch = pad_batch(items, self.pad_id, self.merge)
        else:
            from dentvlm.data.packing import pack_batch

            batch = {**pack_batch(items, self.merge), **batch_extras(items)}
        if self.vision is not None and "image_grid_thw" in batch:
            batch["vision_plan"] = vision_plan(batch["image_grid_thw"], self.vision)
        return to_wire(batch, shared=True) if self.wire else batch
