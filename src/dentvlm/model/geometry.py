"""The public Qwen2.5-VL geometries (their checkpoints' config.json), for memory estimates and for randomly
initialised models of the real shape: what a GPU check trains when the weights themselves do not matter.

`mini` keeps every code path (decoder layers, windowed and full-attention vision blocks, the merger, an
untied head, 3-D rope) at a size a CPU trains in seconds.
"""

from __future__ import annotations

import time
from pathlib import Path

TEXT = {
    "3B": dict(hidden_size=2048, intermediate_size=11008, num_hidden_layers=36, num_attention_heads=16,
               num_key_value_heads=2, vocab_size=151936),
    "7B": dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
               num_key_value_heads=4, vocab_size=152064),
    "mini": dict(hidden_size=256, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=4096),
}
VISION = {
    "3B": dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, fullatt_block_indexes=[7, 15, 23, 31]),
    "7B": dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, fullatt_block_indexes=[7, 15, 23, 31]),
    "mini": dict(depth=2, hidden_size=64, intermediate_size=128, num_heads=4, fullatt_block_indexes=[1]),
}
TIED = {"3B": True, "7B": False, "mini": False}
PATCHES = dict(patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=112)
# The public checkpoints' image bounds (their preprocessor_config.json).
IMAGE_PIXELS = (3136, 12845056)


def qwen25_vl_config(size: str, token_ids: dict | None = None):
    """A `Qwen2_5_VLConfig` of the public `size` geometry; `token_ids` (from another config: image, video,
    vision start/end, bos/eos/pad) make it read that model's tokenizer."""
    from transformers import Qwen2_5_VLConfig

    if size not in TEXT:
        raise ValueError(f"size must be one of {sorted(TEXT)}, got {size!r}")
    head_dim = TEXT[size]["hidden_size"] // TEXT[size]["num_attention_heads"]
    sections = [head_dim // 8, 3 * head_dim // 16, 3 * head_dim // 16]  # 128 -> [16, 24, 24], as published
    ids = token_ids or {}
    text = dict(TEXT[size], max_position_embeddings=32768, rms_norm_eps=1e-6,
                rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": sections},
                **{k: ids[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id") if k in ids})
    vision = dict(VISION[size], **PATCHES, out_hidden_size=TEXT[size]["hidden_size"])
    extra = {k: ids[k] for k in ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id")
             if k in ids}
    return Qwen2_5_VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=TIED[size], **extra)


def build_random_model(size: str, tokenizer_model: Path, out: Path, device: str = "cpu") -> str:
    """Write a randomly initialised Qwen2.5-VL of `size` to `out` (bfloat16 weights, built on `device`),
    with the processor of `tokenizer_model` (whose token ids lie below the real vocabulary) and the public
    image bounds; returns a one-line account."""
    import torch
    from transformers import AutoConfig, AutoProcessor, Qwen2_5_VLForConditionalGeneration

    from dentvlm.model.generation import generation_config

    source = AutoConfig.from_pretrained(tokenizer_model)
    ids = {k: getattr(source, k) for k in ("image_token_id", "video_token_id", "vision_start_token_id",
                                           "vision_end_token_id") if getattr(source, k, None) is not None}
    ids.update({k: getattr(source.text_config, k) for k in ("bos_token_id", "eos_token_id", "pad_token_id")
                if getattr(source.text_config, k, None) is not None})
    config = qwen25_vl_config(size, ids)
    started = time.monotonic()
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device(device):
            model = Qwen2_5_VLForConditionalGeneration(config)
    finally:
        torch.set_default_dtype(default)
    built = time.monotonic() - started
    processor = AutoProcessor.from_pretrained(tokenizer_model)
    model.generation_config = generation_config(128, 1, processor.tokenizer)
    model.save_pretrained(out, max_shard_size="4GB")
    image = processor.image_processor
    image.min_pixels, image.max_pixels = IMAGE_PIXELS
    if isinstance(getattr(image, "size", None), dict):
        image.size = {"shortest_edge": IMAGE_PIXELS[0], "longest_edge": IMAGE_PIXELS[1]}
    processor.save_pretrained(out)
    parameters = sum(p.numel() for p in model.parameters())
    return (f"Qwen2.5-VL {size} geometry, {parameters / 1e9:.2f} B parameters, built in {built:.1f} s, saved in "
            f"{time.monotonic() - started - built:.1f} s to {out}")
