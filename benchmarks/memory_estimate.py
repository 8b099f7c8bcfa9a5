"""Trainable/total parameters and a per-GPU memory estimate for a configs/*.yaml run under FSDP2.

The model is built from the real Qwen2.5-VL architecture config on the meta device (no weights, no
download) and wrapped with the config's LoRA settings through dentvlm's own `apply_finetuning`, so
the counts are exact. Memory is an estimate: sharded weights, LoRA weights + grads + AdamW state,
the all-gathered blocks in flight, checkpointed activations, and the logits of the loss, which
dentvlm computes at answer positions only (`dentvlm.model.loss`). For comparison it also prints the
totals the earlier code reached: logits at every position, and (as the model trained in eval mode)
no gradient checkpointing at all. CPU memory while loading: under FSDP2 rank 0 alone reads the
weights; the other ranks build on the meta device (`dentvlm.model.parallel.load_sharded`).

    python benchmarks/memory_estimate.py --config configs/qwen7b.yaml --gpus 4
"""

from __future__ import annotations

import argparse

import torch
import yaml

from dentvlm.model.finetune import FinetuneSpec, apply_finetuning, parameter_counts

GIB = 1024**3


def meta_model(size: str):
    from transformers import Qwen2_5_VLForConditionalGeneration

    from dentvlm.model.geometry import qwen25_vl_config

    config = qwen25_vl_config(size)
    with torch.device("meta"):
        return Qwen2_5_VLForConditionalGeneration(config), config


def size_of(run: dict, config_path: str) -> str:
    """3B or 7B, from the config's model path or file name."""
    return "3B" if "3B" in str(run["model"]["model_path"]) or "3b" in config_path else "7B"


def estimate(run: dict, size: str, gpus: int, tokens: int | None = None, answer_tokens: int = 16) -> dict:
    """Parameters and the per-GPU memory terms (bytes) of the run config `run` at `size` over `gpus`."""
    model_cfg, data_cfg = run["model"], run["data"]
    model, config = meta_model(size)
    spec = FinetuneSpec(mode=model_cfg.get("finetune", "lora"), vision=model_cfg.get("vision", "frozen"),
                        train_projector=model_cfg.get("train_projector", False),
                        lora_rank=model_cfg.get("lora_rank", 8), lora_alpha=model_cfg.get("lora_alpha", 16),
                        lora_target=model_cfg.get("lora_target", "all-linear"))
    model = apply_finetuning(model, spec)
    trainable, total = parameter_counts(model)
    batch, seq = data_cfg["batch_size"], tokens or data_cfg["cutoff_len"]
    text = config.text_config
    hidden, layers, vocab = text.hidden_size, text.num_hidden_layers, text.vocab_size
    layer = next(m for m in model.modules() if type(m).__name__ == "Qwen2_5_VLDecoderLayer")
    block = 2 * sum(p.numel() for p in layer.parameters())  # one decoder layer, bf16
    recompute = 2 * batch * seq * (10 * hidden + 3 * text.intermediate_size)  # one layer's activations
    parts = {
        "weights (bf16, sharded)": 2 * total / gpus,
        "LoRA weights+grads+AdamW (fp32, sharded)": (4 + 4 + 8) * trainable / gpus,
        "all-gathered blocks in flight": 2 * block,  # current + prefetched layer
        "checkpointed layer inputs": 2 * batch * seq * hidden * layers,
        "one layer recomputed in backward": recompute,
        "logits + fp32 loss (answer tokens)": batch * answer_tokens * vocab * (2 + 4 + 4),
    }
    every_position = batch * seq * vocab * (2 + 4 + 4)
    earlier = sum(parts.values()) - parts["logits + fp32 loss (answer tokens)"] + every_position
    return {"size": size, "spec": spec, "trainable": trainable, "total": total, "batch": batch, "seq": seq,
            "parts": parts, "gib": sum(parts.values()) / GIB, "earlier": earlier,
            "no_checkpointing": earlier - parts["checkpointed layer inputs"] - recompute + layers * recompute}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/qwen7b.yaml")
    parser.add_argument("--gpus", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=None, help="tokens per sample (default: data.cutoff_len)")
    parser.add_argument("--answer_tokens", type=int, default=16,
                        help="label tokens per sample (a classification answer ~10; a COde report ~300)")
    args = parser.parse_args()
    run = yaml.safe_load(open(args.config))
    result = estimate(run, size_of(run, args.config), args.gpus, args.tokens, args.answer_tokens)
    size, spec, trainable, total = result["size"], result["spec"], result["trainable"], result["total"]
    gpus, batch, seq, parts = args.gpus, result["batch"], result["seq"], result["parts"]
    earlier, no_checkpointing = result["earlier"], result["no_checkpointing"]
    print(f"{args.config}: Qwen2.5-VL-{size}, LoRA r={spec.lora_rank} on {spec.lora_target}, vision {spec.vision}")
    print(f"parameters: {trainable:,} trainable of {total:,} ({100 * trainable / total:.3f}%)")
    print(f"per-GPU memory estimate, FSDP2 over {gpus} GPUs, batch {batch} x {seq} tokens "
          f"({args.answer_tokens} answer tokens each), gradient checkpointing:")
    for name, value in parts.items():
        print(f"  {name:<42} {value / GIB:6.2f} GiB")
    print(f"  {'total (+ ~1-2 GiB CUDA context/allocator slack)':<42} {sum(parts.values()) / GIB:6.2f} GiB")
    print(f"  {'earlier: logits at every position':<42} {earlier / GIB:6.2f} GiB")
    print(f"  {'earlier, in eval mode: no checkpointing':<42} {no_checkpointing / GIB:6.2f} GiB")
    print(f"CPU memory while loading: rank 0 {2 * total / GIB:.1f} GiB (bf16 weights), other ranks ~0 "
          f"(meta device); earlier every rank {2 * total / GIB:.1f} GiB ({gpus * 2 * total / GIB:.1f} GiB per node)")


if __name__ == "__main__":
    main()
