"""The committed demo shards are reproducible from the command in shards/demo/README.md."""

import json
import re
import shlex

import pytest

from dentvlm.cli import main

from ..conftest import DEMO_SHARDS


def without_sizes(manifest: dict) -> dict:
    for split in manifest["splits"].values():
        for shard in split["shards"]:
            shard.pop("bytes")
            shard.pop("sha256")  # like the sizes, the bytes depend on the installed libjpeg
    return manifest


@pytest.mark.slow
def test_readme_command_reproduces_the_committed_manifest(tmp_path):
    readme = (DEMO_SHARDS / "README.md").read_text()
    commands = re.search(r"```bash\n(.*?)```", readme, re.S).group(1).replace("\\\n", " ").strip().splitlines()
    assert [c.split()[:2] for c in commands] == [["dentvlm", "synth"], ["dentvlm", "shard"]]
    for command in commands:
        argv = shlex.split(command.replace("/tmp/code-demo", str(tmp_path / "release"))
                           .replace("shards/demo", str(tmp_path / "demo")))
        main(argv[1:])
    rebuilt = json.loads((tmp_path / "demo" / "manifest.json").read_text())
    committed = json.loads((DEMO_SHARDS / "manifest.json").read_text())
    assert without_sizes(rebuilt) == without_sizes(committed)
    assert sorted(p.name for p in (tmp_path / "demo").iterdir()) == sorted(
        p.name for p in DEMO_SHARDS.iterdir() if p.name != "README.md")
