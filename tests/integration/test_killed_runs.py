"""Helper processes do not outlive a killed `dentvlm shard` or `dentvlm fit` (issue class: workers
outlive their parent), and a killed build leaves the target as it was."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ..conftest import DEMO_SHARDS
from .conftest import REPO

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def start(args, cwd) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "dentvlm", *args], cwd=cwd, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait_for_children(process: subprocess.Popen, count: int, timeout: float = 240) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = children(process.pid)
        if len(found) >= count:
            return found
        assert process.poll() is None, "the command ended before starting its workers"
        time.sleep(0.1)
    raise AssertionError(f"no {count} worker processes within {timeout} s")


def assert_all_gone(pids: list[int], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(0.1)
    survivors = [p for p in pids if alive(p)]
    for pid in survivors:  # don't leave them to the rest of the suite
        os.kill(pid, signal.SIGKILL)
    assert not survivors, f"{len(survivors)} worker(s) outlived their parent"


@pytest.mark.slow
def test_killed_fit_takes_its_dataloader_workers_along(tmp_path):
    process = start(["fit", "--config", str(REPO / "configs" / "tiny.yaml"), "--data.shards", str(DEMO_SHARDS),
                     "--trainer.default_root_dir", str(tmp_path / "run"), "--data.num_workers", "2",
                     "--trainer.logger", "lightning.pytorch.loggers.CSVLogger"], cwd=tmp_path)
    workers = wait_for_children(process, 2)
    time.sleep(1)
    process.send_signal(signal.SIGKILL)
    process.wait(30)
    assert_all_gone(workers)


@pytest.fixture(scope="module")
def slow_release(tmp_path_factory) -> Path:
    """A COde-layout release whose 60 rows share one large PNG: enough image work to kill a build midway."""
    root = tmp_path_factory.mktemp("slow") / "COde-Dataset"
    photos = root / "Images" / "Photographs"
    photos.mkdir(parents=True)
    (root / "Images" / "Radiographs").mkdir()
    gradient = np.linspace(0, 255, 2500 * 2500, dtype=np.float32).reshape(2500, 2500).astype(np.uint8)
    Image.fromarray(gradient).convert("RGB").save(photos / "big.png", compress_level=1)
    rows = [f"C{i},P{i},big.png,Caries" for i in range(60)]
    (root / "complete_dataset.csv").write_text("checkup_id,patient_id,photographs,anomalies_en\n" + "\n".join(rows))
    return root


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["kill-9", "kill"])
def test_killed_shard_takes_its_image_workers_along(tmp_path, slow_release, sig):
    out = tmp_path / "shards"
    process = start(["shard", str(slow_release), str(out), "--salt", "s", "--workers", "2", "--image_long_side",
                     "64"], cwd=tmp_path)
    workers = wait_for_children(process, 2)
    time.sleep(1)
    process.send_signal(sig)
    process.wait(60)
    assert_all_gone(workers)
    assert not out.exists()  # never a half-built folder under the target's name
    if sig == signal.SIGTERM:  # a clean exit also removes its build folder
        assert sorted(p.name for p in tmp_path.iterdir()) == []

