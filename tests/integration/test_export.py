"""`dentvlm export`: adapter and merged folders load with plain transformers/peft (dentvlm blocked from
import in the loading process) and give the same outputs as dentvlm's own module."""

import json
import subprocess
import sys
import textwrap

import pytest
import torch

from dentvlm.cli import main
from dentvlm.data.datamodule import DentDataModule
from dentvlm.model.inputs import model_inputs
from dentvlm.model.module import DentVLM

from .conftest import REPO

LOADER = textwrap.dedent("""
    import sys
    sys.modules["dentvlm"] = None  # loading must not need dentvlm
    import json, torch
    from transformers import AutoModelForImageTextToText, AutoProcessor
    folder, kind, batch_file, out_file = sys.argv[1:]
    if kind == "merged":
        model = AutoModelForImageTextToText.from_pretrained(folder)
    else:
        from peft import PeftModel
        base = json.load(open(folder + "/adapter_config.json"))["base_model_name_or_path"]
        model = PeftModel.from_pretrained(AutoModelForImageTextToText.from_pretrained(base), folder)
    AutoProcessor.from_pretrained(folder)  # the processor travels with the export
    inputs = torch.load(batch_file)
    with torch.no_grad():
        torch.save(model.eval()(**inputs).logits, out_file)
""")


@pytest.fixture(scope="module")
def reference(trained_run, tmp_path_factory):
    """dentvlm's logits for one demo batch, from the trained checkpoint."""
    folder = tmp_path_factory.mktemp("export")
    module = DentVLM.load_from_checkpoint(trained_run / "checkpoints" / "last.ckpt")
    module.configure_model()
    state = torch.load(trained_run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert not module.load_state_dict(state, strict=False).unexpected_keys
    data = DentDataModule(shards=str(REPO / "shards" / "demo"), processor_path="tiny", num_workers=0,
                          eval_batch_size=2)
    data.setup()
    batch = next(iter(data.val_dataloader()[0]))
    inputs = model_inputs(batch, pixels=module.pixels)  # what a processor gives plain transformers
    torch.save(inputs, folder / "batch.pt")
    with torch.no_grad():
        logits = module.eval().network(**inputs).logits
    return folder, logits


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["adapter", "merged"])
def test_export_loads_without_dentvlm_and_matches(trained_run, reference, kind):
    folder, expected = reference
    out = folder / kind
    main(["export", str(trained_run / "checkpoints" / "last.ckpt"), str(out), "--merge", str(kind == "merged").lower()])
    assert json.loads((out / "labels.json").read_text())["classes"][0] == "malocclusion"
    result = folder / f"{kind}.pt"
    run = subprocess.run([sys.executable, "-c", LOADER, str(out), kind, str(folder / "batch.pt"), str(result)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    torch.testing.assert_close(torch.load(result), expected, rtol=1e-4, atol=1e-4)
    if kind == "merged":
        assert not (out / "adapter_config.json").exists() and (out / "model.safetensors").is_file()
        # the trained vision tower (modules_to_save) made it into the merged weights
        from safetensors.torch import load_file

        merged = load_file(out / "model.safetensors")
        base = load_file(json.loads((trained_run / "checkpoints" / "last" / "dentvlm.json").read_text())["base_model"]
                         + "/model.safetensors")
        key = next(k for k in merged if "visual.blocks.0.attn.qkv.weight" in k)
        assert not torch.equal(merged[key], base[key])


def test_export_refuses_a_non_checkpoint(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["export", str(tmp_path / "nothing.ckpt"), str(tmp_path / "out")])
    assert info.value.code == 1
    assert "dentvlm export: error: " in capsys.readouterr().err
    from dentvlm.export import export_checkpoint

    with pytest.raises(FileNotFoundError, match="no checkpoint folder with dentvlm.json"):
        export_checkpoint(tmp_path / "nothing.ckpt", tmp_path / "out")
