"""Every shipped YAML parses against the real CLI, and says what it is for and how to run it."""

import re
from pathlib import Path

import pytest
import yaml

from dentvlm.cli import main

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))


def test_there_are_configs():
    assert {p.name for p in CONFIGS} >= {"tiny.yaml", "qwen3b.yaml", "qwen7b.yaml"}


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.name)
def test_config_parses_and_documents_its_command(config, capsys):
    header = re.split(r"\n\n(?=\w)", config.read_text())[0]
    assert header.startswith("# ") and re.search(rf"dentvlm fit (--config configs/\S+ )*--config configs/{config.name}",
                                                 header)
    with pytest.raises(SystemExit) as info:
        main(["fit", "--config", str(config), "--print_config"])
    assert info.value.code == 0
    resolved = yaml.safe_load(capsys.readouterr().out)
    source = yaml.safe_load(config.read_text())
    for section in ("model", "data"):
        for key, value in source.get(section, {}).items():
            assert resolved[section][key] == value, (section, key)


def test_paper_recipe_in_the_qwen_configs():
    for name in ("qwen3b.yaml", "qwen7b.yaml"):
        config = yaml.safe_load((CONFIGS[0].parent / name).read_text())
        assert config["model"]["learning_rate"] == 5e-4 and config["model"]["warmup_ratio"] == 0.1
        assert config["model"]["lora_target"] == "all-linear" and config["data"]["cutoff_len"] == 4096
        assert config["data"]["batch_size"] == 2 and config["trainer"]["accumulate_grad_batches"] == 8
        assert config["trainer"]["max_epochs"] == 3 and config["trainer"]["precision"] == "bf16-mixed"
        assert config["trainer"]["strategy"]["class_path"].endswith("ModelParallelStrategy")


def test_unknown_key_is_named(capsys):
    with pytest.raises(SystemExit):
        main(["fit", "--config", str(CONFIGS[0]), "--model.lora_rnak", "4", "--print_config"])
    assert "lora_rnak" in capsys.readouterr().err


def test_environment_overrides(monkeypatch, capsys):
    monkeypatch.setenv("DENTVLM_FIT__TRAINER__MAX_EPOCHS", "1")
    monkeypatch.setenv("DENTVLM_FIT__MODEL__LORA_RANK", "4")
    with pytest.raises(SystemExit):
        main(["fit", "--config", str(CONFIGS[0].parent / "tiny.yaml"), "--print_config"])
    resolved = yaml.safe_load(capsys.readouterr().out)
    assert resolved["trainer"]["max_epochs"] == 1 and resolved["model"]["lora_rank"] == 4
