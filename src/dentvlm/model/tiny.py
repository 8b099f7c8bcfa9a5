"""The embedded default model: a tiny, randomly initialised Qwen2.5-VL with a real processor.

Built locally and deterministically, no download: a byte-level BPE tokenizer trained on the demo
text (the synthetic release's wording rendered in the task prompts) with Qwen's special tokens, a
`Qwen2VLImageProcessor` bounded to small images, and a ~1.4 M parameter
`Qwen2_5_VLForConditionalGeneration`. It is saved as an ordinary Hugging Face folder, so the code
that loads a real 7B loads it too.
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import torch

from dentvlm.cache import cache_dir

TINY_VERSION = 2
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                  "<|image_pad|>", "<|video_pad|>"]
VOCAB_SIZE = 2048
IMAGE_MIN_PIXELS = 56 * 56
IMAGE_MAX_PIXELS = 112 * 112  # at most 16 image tokens (one per 28x28 pixels)

# Renders the same text as Qwen2-VL/2.5-VL's own template for text and image parts.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def tiny_corpus(num_checkups: int = 3000, seed: int = 0) -> Iterator[str]:
    """Demo text: synthetic checkups rendered as classification and report chats."""
    from dentvlm.data.tasks import format_checkup
    from dentvlm.labels import DEFAULT_CLASSES
    from dentvlm.records import INFO_FIELDS, REPORT_SECTIONS, Checkup
    from dentvlm.synth.text import CheckupText, capitalised

    rng = random.Random(seed)
    for index in range(num_checkups):
        labels = rng.sample(DEFAULT_CLASSES, rng.choice((1, 1, 2)))
        fields = CheckupText(labels, DEFAULT_CLASSES, rng).fields()
        fields.update(age=str(rng.randint(10, 90)), gender=rng.choice(("male", "female")),
                      visit_type=rng.choice(("first", "follow-up")))
        checkup = Checkup(key=f"c{index}", patient="p", modalities=[], labels=labels,
                          info={k: fields[k] for k in INFO_FIELDS},
                          report={k: fields[k] for k in REPORT_SECTIONS if fields.get(k)})
        for task in ("classification", "report"):
            example = format_checkup(checkup, [], task, DEFAULT_CLASSES)
            for message in example.messages:
                yield "".join(part.get("text", "") for part in message["content"])
        yield ", ".join(capitalised(label) for label in labels)
    yield "You are a helpful assistant.\nimage-1: image-2: image-3: image-4: image-5: image-6: image-7: image-8:"


def build_tokenizer(texts: Iterator[str]):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB_SIZE, special_tokens=SPECIAL_TOKENS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   model_max_length=4096, padding_side="right")


def tiny_config(tokenizer):
    from transformers import Qwen2_5_VLConfig

    ids = dict(zip(SPECIAL_TOKENS, tokenizer.convert_tokens_to_ids(SPECIAL_TOKENS)))
    text = dict(vocab_size=len(tokenizer), hidden_size=128, intermediate_size=256, num_hidden_layers=4,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                # head_dim 32 -> 16 rotary frequencies split over (time, height, width)
                rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [4, 6, 6]},
                bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"])
    vision = dict(depth=2, hidden_size=64, intermediate_size=128, num_heads=4, out_hidden_size=128,
                  fullatt_block_indexes=[1], window_size=112)
    return Qwen2_5_VLConfig(text_config=text, vision_config=vision, image_token_id=ids["<|image_pad|>"],
                            video_token_id=ids["<|video_pad|>"], vision_start_token_id=ids["<|vision_start|>"],
                            vision_end_token_id=ids["<|vision_end|>"], tie_word_embeddings=False)


def build_tiny_model(out: Path, seed: int = 0) -> Path:
    """Write the tiny model and its processor to `out` (same seed, same files)."""
    from transformers import (
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        Qwen2VLImageProcessor,
        Qwen2VLVideoProcessor,
    )

    tokenizer = build_tokenizer(tiny_corpus(seed=seed))
    image_processor = Qwen2VLImageProcessor(min_pixels=IMAGE_MIN_PIXELS, max_pixels=IMAGE_MAX_PIXELS)
    processor = Qwen2_5_VLProcessor(image_processor=image_processor, tokenizer=tokenizer,
                                    video_processor=Qwen2VLVideoProcessor(), chat_template=CHAT_TEMPLATE)
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = Qwen2_5_VLForConditionalGeneration(tiny_config(tokenizer))
    finally:
        torch.random.set_rng_state(generator_state)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def ensure_tiny_model() -> Path:
    """The tiny model's folder in the cache, built on first use (safe when ranks race to build it)."""
    final = cache_dir() / f"tiny-qwen2.5-vl-v{TINY_VERSION}"
    if (final / "config.json").is_file():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".tiny-", dir=final.parent))
    build_tiny_model(staging)
    try:
        os.rename(staging, final)  # atomic; fails if another process finished first
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        if not (final / "config.json").is_file():
            raise
    return final
