"""The GPU check (benchmarks/gpu_check.py) on the CPU at the mini geometry: the same commands and overlay
as on a GPU (configs/qwen7b.yaml: ModelParallelStrategy/FSDP2, bf16-mixed, gradient checkpointing),
through fit, test with both baselines, a merged export and one served request, and its table."""

import subprocess
import sys

import pytest

from .conftest import REPO


@pytest.mark.slow
def test_the_gpu_check_runs_the_recipe_at_the_mini_geometry_on_a_cpu(tmp_path):
    result = subprocess.run(
        [sys.executable, "benchmarks/gpu_check.py", "--size", "mini", "--device", "cpu", "--checkups", "25",
         "--steps", "2", "--accumulate", "2", "--override", "data.max_pixels=50176", "--work", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, (result.stdout[-2000:], result.stderr[-3000:])
    out = result.stdout
    for stage in ("model", "synth", "shard", "fit", "test", "export"):
        assert f"gpu_check: {stage} ok" in out
    assert "| steady training samples/s, tokens/s" in out and "| serve" in out and "answered" in out
    fit_log = (tmp_path / "fit.log").read_text()
    assert "FSDP2 full sharding" in fit_log  # ModelParallelStrategy on the CPU, through the recipe's strategy
    import yaml

    config = yaml.safe_load((tmp_path / "run" / "checkpoints" / "last" / "config.yaml").read_text())
    assert config["trainer"]["precision"] == "bf16-mixed" and config["model"]["gradient_checkpointing"] is True
