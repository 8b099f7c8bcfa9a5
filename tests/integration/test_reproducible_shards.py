"""Identical shard builds write identical bytes (issue class: manifest bytes differ between runs)."""

import os
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_identical_runs_write_identical_bytes(tmp_path, synth_release):
    """Two processes with different string-hash seeds (set iteration order) write the same files."""
    outputs = []
    for seed in ("1", "2"):
        out = tmp_path / f"run{seed}"
        env = {**os.environ, "PYTHONHASHSEED": seed}
        subprocess.run([sys.executable, "-m", "dentvlm", "shard", str(synth_release), str(out), "--salt", "s",
                        "--workers", "2", "--image_long_side", "48", "--max_count", "7"], env=env, check=True,
                       capture_output=True, timeout=300)
        outputs.append({p.name: p.read_bytes() for p in sorted(out.iterdir())})
    assert list(outputs[0]) == list(outputs[1]) and "manifest.json" in outputs[0]
    for name in outputs[0]:
        assert outputs[0][name] == outputs[1][name], name
