"""`dentvlm shard` into a folder that is its own mount point (a data volume): the first build and an
--overwrite rebuild both land, and the rebuild keeps the user's other files. Here the mount is a real
tmpfs in a private mount namespace (it needs root and util-linux's unshare, as on this project's CI
machines); the old code moved the build across file systems and lost everything."""

import shutil
import subprocess
import sys

import pytest

SCRIPT = r"""
set -e
mount -t tmpfs tmpfs "$OUT"
echo mine > "$OUT/README.md"
"$PY" -m dentvlm shard "$SRC" "$OUT" --salt s --image_long_side 48 --workers 1 --max_count 7
"$PY" -c "import json,sys; print('FIRST', json.load(open(sys.argv[1]))['splits']['train']['checkups'])" \
    "$OUT/manifest.json"
"$PY" -m dentvlm shard "$SRC" "$OUT" --salt other --image_long_side 40 --workers 1 --max_count 7 --overwrite true
"$PY" -c "import json,sys; print('SECOND', json.load(open(sys.argv[1]))['settings']['image_long_side'])" \
    "$OUT/manifest.json"
echo "BEFORE $(ls -A "$OUT" | tr '\n' ' ')"
"$PY" -m dentvlm shard "$SRC" "$OUT" --salt other --image_long_side 40 --workers 1 --max_count 7 --overwrite true \
    --source_format sharegpt || echo "FAILED AS EXPECTED"
echo "AFTER $(ls -A "$OUT" | tr '\n' ' ')"
cat "$OUT/README.md"
"""


def can_mount() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "--mount", "--propagation", "private", "true"], capture_output=True)
    return probe.returncode == 0


@pytest.mark.skipif(not can_mount(), reason="needs root and unshare to mount a tmpfs in a private namespace")
def test_shard_onto_a_mount_point_and_rebuild_it(synth_release, tmp_path):
    out = tmp_path / "volume"
    out.mkdir()
    env = {"OUT": str(out), "SRC": str(synth_release), "PY": sys.executable, "PATH": "/usr/bin:/bin:/usr/sbin:/sbin"}
    result = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", SCRIPT], env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert any(line.startswith("FIRST ") for line in lines)
    assert "SECOND 40" in lines  # the rebuild replaced the shards
    before = next(line for line in lines if line.startswith("BEFORE ")).split()[1:]
    after = next(line for line in lines if line.startswith("AFTER ")).split()[1:]
    assert "FAILED AS EXPECTED" in lines and after == before  # a failed rebuild leaves them as they were
    assert "manifest.json" in after and "README.md" in after and not any(name.startswith(".") for name in after)
    assert lines[-1] == "mine"
