"""Merged exports keep the fine-tuning, and every export answers with dentvlm's own greedy settings.

A LoRA update is small beside the weights it lands on; merged into bfloat16 it partly rounds away. The
export measures what the merged weights lose on real prompts (logits of merged vs. base + adapter) and
refuses beyond `--max_merge_error`; float32 (the default) keeps it."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from dentvlm.cli import main
from dentvlm.merge_check import merge_error


def small_update_checkpoint(trained_run, tmp_path):
    """The trained checkpoint folder with its LoRA updates scaled down 1,000 times and the fully
    trained modules left out, as a 7B's small updates look beside its weights."""
    folder = tmp_path / "small"
    shutil.copytree(trained_run / "checkpoints" / "last", folder)
    weights = load_file(folder / "adapter_model.safetensors")
    small = {k: v * 1e-3 if "lora_B" in k else v for k, v in weights.items() if "lora_" in k}
    save_file(small, str(folder / "adapter_model.safetensors"), metadata={"format": "pt"})
    config = json.loads((folder / "adapter_config.json").read_text())
    config["modules_to_save"] = None
    (folder / "adapter_config.json").write_text(json.dumps(config))
    return folder


@pytest.mark.slow
def test_a_bfloat16_merge_that_loses_the_update_is_refused_and_float32_keeps_it(trained_run, tmp_path, capsys):
    folder = small_update_checkpoint(trained_run, tmp_path)
    with pytest.raises(SystemExit) as info:
        main(["export", str(folder), str(tmp_path / "bf16"), "--merge", "true", "--dtype", "bfloat16"])
    assert info.value.code == 1
    err = capsys.readouterr().err
    assert "the merged weights lose" in err and "--dtype float32" in err
    assert not (tmp_path / "bf16").exists()  # nothing that looks like a model is left

    main(["export", str(folder), str(tmp_path / "fp32"), "--merge", "true"])
    base = json.loads((folder / "dentvlm.json").read_text())["base_model"]
    assert merge_error(tmp_path / "fp32", folder, base) < 0.005  # float32 arithmetic only
    weights = load_file(tmp_path / "fp32" / "model.safetensors")
    assert all(v.dtype == torch.float32 for v in weights.values() if v.is_floating_point())
    # the same 16-bit export, accepted knowingly, is measured: it loses a large share
    main(["export", str(folder), str(tmp_path / "bf16-ok"), "--merge", "true", "--dtype", "bfloat16",
          "--max_merge_error", "10"])
    assert merge_error(tmp_path / "bf16-ok", folder, base) > 0.05


@pytest.mark.slow
@pytest.mark.parametrize("merge", [False, True])
def test_every_export_carries_dentvlms_greedy_generation_settings(trained_run, tmp_path, merge):
    """A base checkpoint's own generation_config.json (Qwen2.5-VL: sampling, repetition penalty 1.05)
    must not travel: vLLM and plain `generate` read it."""
    out = tmp_path / "export"
    main(["export", str(trained_run / "checkpoints" / "last"), str(out), "--merge", str(merge).lower()])
    settings = json.loads((out / "generation_config.json").read_text())
    vocabulary = json.loads((out / "tokenizer.json").read_text())["added_tokens"]
    ends = {t["id"] for t in vocabulary if t["content"] in ("<|im_end|>", "<|endoftext|>")}
    assert settings["do_sample"] is False and settings["repetition_penalty"] == 1.0
    assert set(settings["eos_token_id"]) >= ends and len(ends) == 2
    described = json.loads((trained_run / "checkpoints" / "last" / "dentvlm.json").read_text())
    assert settings["max_new_tokens"] == described["model_hparams"]["max_new_tokens"]


@pytest.mark.slow
def test_exports_and_checkpoint_folders_follow_the_umask(trained_run, tmp_path):
    import os
    import stat

    out = tmp_path / "merged"
    main(["export", str(trained_run / "checkpoints" / "last"), str(out), "--merge", "true"])
    mask = os.umask(0)
    os.umask(mask)
    for folder in (out, trained_run / "checkpoints" / "last"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o777 & ~mask
        assert {stat.S_IMODE(p.stat().st_mode) for p in folder.iterdir()} == {0o666 & ~mask}, folder
