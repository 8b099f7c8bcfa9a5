"""Output folders follow the umask (they came out 0700 with 0600 weights: a serving account could not
read an export)."""

import os
import stat

import pytest

from dentvlm.ingest.images import ImagePolicy
from dentvlm.permissions import follow_umask
from dentvlm.sharding import build_shards


@pytest.fixture(params=[0o022, 0o027])
def umask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def modes(folder):
    return {p.name: stat.S_IMODE(p.stat().st_mode) for p in [folder, *folder.rglob("*")]}


def test_follow_umask_opens_private_staging_modes(tmp_path, umask):
    folder = tmp_path / "export"
    (folder / "sub").mkdir(parents=True)
    os.chmod(folder, 0o700)
    (folder / "sub" / "model.safetensors").write_bytes(b"x")
    os.chmod(folder / "sub" / "model.safetensors", 0o600)
    follow_umask(folder)
    assert modes(folder) == {"export": 0o777 & ~umask, "sub": 0o777 & ~umask, "model.safetensors": 0o666 & ~umask}


def test_a_new_shard_folder_follows_the_umask(synth_release, tmp_path, umask):
    out = tmp_path / "shards"
    build_shards(synth_release, out, salt="s", val=0.2, test=0.2, policy=ImagePolicy(long_side=32), workers=1,
                 progress=False)
    found = modes(out)
    assert found.pop("shards") == 0o777 & ~umask
    assert set(found.values()) == {0o666 & ~umask}
