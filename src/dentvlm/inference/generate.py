"""Batched generation for encoded chat prompts, with per-request decoding settings.

Greedy decoding uses exactly the generation settings of `dentvlm test` (`generation_config`), and the
same left-padded prompts (`pad_batch`), so a served checkpoint answers as it did in evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dentvlm.data.collate import Encoded, pad_batch
from dentvlm.model.generation import generation_config
from dentvlm.model.inputs import PixelNormalizer, model_inputs


@dataclass(frozen=True)
class Decoding:
    """How to pick tokens.

    Attributes:
        max_new_tokens: Answer length limit.
        temperature: 0: greedy (deterministic); above 0: sampling at this temperature.
        top_p: Nucleus sampling mass (sampling only).
    """

    max_new_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1 or self.temperature < 0 or not 0 < self.top_p <= 1:
            raise ValueError(f"bad decoding settings {self}: max_new_tokens >= 1, temperature >= 0, 0 < top_p <= 1")


@dataclass
class Answer:
    """One generated answer with its token counts and why it ended ("stop" or "length")."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str


def generation_settings(decoding: Decoding, tokenizer):
    """The complete `GenerationConfig` for `decoding` (see `dentvlm.model.generation`)."""
    config = generation_config(decoding.max_new_tokens, 1, tokenizer)
    if decoding.temperature > 0:
        config.do_sample, config.temperature, config.top_p = True, decoding.temperature, decoding.top_p
    return config


@torch.no_grad()
def generate(network: torch.nn.Module, processor, items: list[Encoded], decoding: Decoding, pad_id: int,
             autocast: torch.dtype | None = None) -> list[Answer]:
    """Answers for `items` (evaluation encodings: prompt + empty answer), generated as one batch, under
    `autocast` (the training run's mixed precision, `InferenceModel.autocast`) when given."""
    tokenizer = processor.tokenizer
    batch = pad_batch(items, pad_id)
    device = next(network.parameters()).device
    batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
    # the encodings hold uint8 images; normalise them as the in-process model does
    inputs = model_inputs(batch, generation=True, pixels=PixelNormalizer(processor.image_processor))
    # Set on the model rather than passed: transformers fills a passed config's defaults from the
    # model's own generation config (e.g. Qwen's repetition_penalty), which evaluation never used.
    network.generation_config = generation_settings(decoding, tokenizer)
    with torch.autocast(device.type, dtype=autocast or torch.float32, enabled=autocast is not None):
        output = network.generate(**inputs)
    new = output[:, inputs["input_ids"].shape[1]:].cpu()  # (B, generated), padded after each row's end
    ends_at = torch.tensor(network.generation_config.eos_token_id)  # every end token (see end_token_ids)
    answers = []
    for item, row in zip(items, new):
        ends = torch.isin(row, ends_at).nonzero()
        length = int(ends[0]) + 1 if len(ends) else len(row)
        text = tokenizer.decode(row[:length], skip_special_tokens=True).strip()
        answers.append(Answer(text, item.prompt_len, length, "stop" if len(ends) else "length"))
    return answers
