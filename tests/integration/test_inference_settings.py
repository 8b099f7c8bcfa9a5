"""`dentvlm serve` and `dentvlm predict` compute as the run's `dentvlm test` did: its weight dtype, its
attention implementations and its mixed precision (it used to be fp32 without autocast and sdpa always,
so "served answers equal test's" held on the CPU only)."""

import shutil

import pytest
import torch
import yaml

from dentvlm.data.collate import ChatEncoder
from dentvlm.data.tasks import Example
from dentvlm.inference.generate import Decoding, generate
from dentvlm.inference.load import autocast_dtype, load_for_inference


@pytest.mark.parametrize(("precision", "dtype"), [("bf16-mixed", torch.bfloat16), ("16-mixed", torch.float16),
                                                  ("32-true", None), (None, None), ("64-true", None)])
def test_autocast_follows_the_runs_precision(precision, dtype):
    assert autocast_dtype({"precision": precision}) == dtype


def run_with(trained_run, tmp_path, precision, attention):
    folder = tmp_path / "last"
    shutil.copytree(trained_run / "checkpoints" / "last", folder)
    config = yaml.safe_load((folder / "config.yaml").read_text())
    config["trainer"]["precision"] = precision
    config["model"]["attn_implementation"] = attention
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    return folder


@pytest.mark.slow
def test_serving_loads_with_the_runs_attention_and_precision(trained_run, tmp_path):
    model = load_for_inference(run_with(trained_run, tmp_path, "bf16-mixed", "eager"))
    assert model.network.config._attn_implementation == "eager" and model.autocast == torch.bfloat16
    assert load_for_inference(run_with(trained_run, tmp_path / "b", None, "sdpa"), attn_implementation="eager") \
        .network.config._attn_implementation == "eager"  # an explicit choice still wins


@pytest.mark.slow
def test_generation_runs_under_the_runs_autocast(trained_run, tmp_path):
    """bf16-mixed: the matrix products of generation run in bfloat16, as Lightning's test loop ran them."""
    model = load_for_inference(run_with(trained_run, tmp_path, "bf16-mixed", "sdpa"))
    seen = []
    layer = model.network.model.language_model.layers[0].mlp.down_proj
    handle = layer.register_forward_hook(lambda m, args, out: seen.append(out.dtype))
    encoder = ChatEncoder(model.processor)
    example = Example(key="k", task="chat", images=[], target="", messages=[
        {"role": "user", "content": [{"type": "text", "text": "Which conditions?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": ""}]}])
    try:
        generate(model.network, model.processor, [encoder.encode(example, training=False)], Decoding(2),
                 encoder.pad_id, autocast=model.autocast)
    finally:
        handle.remove()
    assert seen and set(seen) == {torch.bfloat16}


@pytest.mark.slow
def test_a_merged_export_computes_in_its_saved_dtype_and_flash_falls_back_on_a_cpu(trained_run, tmp_path):
    """A float32 merge exists to keep a small update that bfloat16 rounds away: serving it must not cast it
    back (no run dtype, no autocast). A run trained with flash attention still loads on a CPU (sdpa)."""
    from dentvlm.cli import main

    folder = run_with(trained_run, tmp_path, "bf16-mixed", "flash_attention_2")
    config = yaml.safe_load((folder / "config.yaml").read_text())
    config["model"]["dtype"] = "bfloat16"
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    checkpoint = load_for_inference(folder)
    assert checkpoint.network.config._attn_implementation == "sdpa" and checkpoint.autocast == torch.bfloat16
    assert next(checkpoint.network.parameters()).dtype == torch.bfloat16
    main(["export", str(folder), str(tmp_path / "merged"), "--merge", "true"])
    merged = load_for_inference(tmp_path / "merged")
    assert merged.autocast is None and next(merged.network.parameters()).dtype == torch.float32
