"""The manifest travels with the shards: it names no source file (clinics name exports after patients)."""

import csv
import io
import json
import shutil

from PIL import Image

from dentvlm.ingest.images import ImagePolicy
from dentvlm.sharding import build_shards

NAME = "Wang_Xiaoming_1987-03-02"


def test_sharegpt_file_name_is_not_in_the_manifest(tmp_path):
    out = io.BytesIO()
    Image.new("RGB", (40, 30), (200, 80, 80)).save(out, "JPEG")
    (tmp_path / "a.jpg").write_bytes(out.getvalue())
    entry = {"messages": [{"role": "user", "content": "<image> Which?"}, {"role": "assistant", "content": "Caries"}],
             "images": ["a.jpg"]}
    source = tmp_path / f"{NAME}.json"
    source.write_text(json.dumps([entry]))
    manifest = build_shards(source, tmp_path / "out", salt="s", val=0, test=0, policy=ImagePolicy(long_side=32),
                            workers=1, progress=False)
    assert NAME not in json.dumps(manifest) and NAME not in (tmp_path / "out" / "manifest.json").read_text()


def test_code_csv_file_name_is_not_in_the_manifest(synth_release, tmp_path):
    root = tmp_path / "export"
    shutil.copytree(synth_release, root)
    named = root / f"{NAME}.csv"
    (root / "complete_dataset.csv").rename(named)
    with named.open(newline="") as handle:
        assert next(csv.reader(handle))  # a real CSV
    manifest = build_shards(named, tmp_path / "out", salt="s", val=0, test=0, policy=ImagePolicy(long_side=32),
                            workers=1, progress=False)
    assert NAME not in (tmp_path / "out" / "manifest.json").read_text()
    assert manifest["source"]["kind"] == "code_release"
