"""What merging a LoRA update into 16-bit weights loses, on one layer of the Qwen2.5-VL-7B shape.

A LoRA update is small beside the weights it is added to (std ~1e-4 on weights of std ~0.02; bfloat16's
spacing near 0.02 is ~1.2e-4): merged into bfloat16, much of it rounds away. This builds a 3584 x 3584
projection with bfloat16 weights (as a 7B checkpoint stores them) and a rank-8 peft LoRA adapter whose
update has the given std, merges it with peft as `dentvlm export` did before (into the bfloat16 base) and
as it does now (into a float32 copy: the default export), and prints, against the exact float64 merge,
the share of weights left unchanged and the error of the layer's output change on random inputs.

    python benchmarks/merge_precision.py [--update-std 1e-4] [--size 3584]
"""

from __future__ import annotations

import argparse

import torch
from peft import LoraConfig, get_peft_model


def merged_weight(base: torch.Tensor, lora_a: torch.Tensor, lora_b: torch.Tensor, rank: int, dtype) -> torch.Tensor:
    """peft's merge_and_unload of one LoRA layer whose base weight is `base` cast to `dtype`."""
    layer = torch.nn.Sequential(torch.nn.Linear(base.shape[1], base.shape[0], bias=False))
    layer[0].weight.data = base.to(dtype, copy=True)  # the merge writes into it
    model = get_peft_model(layer, LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=["0"]))
    model.base_model.model[0].lora_A["default"].weight.data = lora_a.float()
    model.base_model.model[0].lora_B["default"].weight.data = lora_b.float()
    return model.merge_and_unload()[0].weight.data


def report(name: str, weight: torch.Tensor, base: torch.Tensor, exact: torch.Tensor, x: torch.Tensor) -> None:
    unchanged = (weight.double() == base.double()).double().mean().item()
    update = x @ (exact - base.double()).T
    error = (x @ (weight.double() - exact).T).norm() / update.norm()
    print(f"  {name:<50} weights unchanged {100 * unchanged:5.1f}%   output-change error {100 * error:6.2f}%")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=3584)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--update-std", type=float, default=1e-4)
    args = parser.parse_args()
    torch.manual_seed(0)
    base = (torch.randn(args.size, args.size) * 0.02).to(torch.bfloat16)  # what the checkpoint stores
    lora_a = torch.randn(args.rank, args.size) / args.size**0.5
    lora_b = torch.randn(args.size, args.rank)
    scale = 2.0  # lora_alpha / r
    lora_b *= args.update_std / (scale * (lora_b @ lora_a).std())
    exact = base.double() + scale * (lora_b.double() @ lora_a.double())
    x = torch.randn(64, args.size, dtype=torch.float64)
    print(f"{args.size} x {args.size} layer, bfloat16 weights (std 0.02), rank-{args.rank} LoRA update of std "
          f"{args.update_std:g}, against the exact merge:")
    report("before: merged into the bfloat16 base", merged_weight(base, lora_a, lora_b, args.rank, torch.bfloat16),
           base, exact, x)
    merged = merged_weight(base, lora_a, lora_b, args.rank, torch.float32)
    report("now: merged in float32, saved float32 (default)", merged, base, exact, x)
    report("now: merged in float32, saved bfloat16 (--dtype)", merged.to(torch.bfloat16), base, exact, x)


if __name__ == "__main__":
    main()
