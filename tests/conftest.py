"""Shared fixtures: a small synthetic release, its shards, and the tiny model (all built locally)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dentvlm.ingest.images import ImagePolicy
from dentvlm.sharding import build_shards
from dentvlm.synth import write_synthetic_release

REPO = Path(__file__).resolve().parents[1]
# LLaMA-Factory's multimodal ShareGPT demo, copied unchanged (Apache-2.0; see its README.md)
SHAREGPT_FIXTURE = REPO / "tests" / "fixtures" / "sharegpt-llamafactory" / "mllm_demo.json"
DEMO_SHARDS = REPO / "shards" / "demo"


@pytest.fixture(scope="session")
def synth_release(tmp_path_factory) -> Path:
    """40 checkups with small images, in the real COde layout."""
    out = tmp_path_factory.mktemp("release") / "COde-Dataset"
    return write_synthetic_release(out, num_checkups=40, seed=3, photo_size=(160, 120), radiograph_size=(160, 80))


@pytest.fixture(scope="session")
def small_shards(synth_release, tmp_path_factory) -> Path:
    """Shards of `synth_release`: 64 px images, at most 6 checkups per shard."""
    out = tmp_path_factory.mktemp("shards")
    build_shards(synth_release, out, salt="test-salt", val=0.2, test=0.2, seed=0,
                 policy=ImagePolicy(long_side=64, jpeg_quality=85), max_count=6, workers=1, progress=False)
    return out


@pytest.fixture(scope="session")
def tiny_model_dir() -> Path:
    from dentvlm.model.tiny import ensure_tiny_model

    return ensure_tiny_model()


@pytest.fixture(scope="session")
def sharegpt_fixture() -> Path:
    if not SHAREGPT_FIXTURE.is_file():
        pytest.fail(f"missing third-party fixture {SHAREGPT_FIXTURE}")
    return SHAREGPT_FIXTURE


@pytest.fixture(scope="session")
def code_shards(tmp_path_factory) -> Path:
    """48 checkups shaped like COde's (the synth "code" profile: 1-8 photos, 5.7 on average, 0-2
    radiographs, COde-length text; photos drawn at 1280 px to keep the fixture quick), sharded at
    the release's stored size (1,024 px long side)."""
    release = write_synthetic_release(tmp_path_factory.mktemp("code") / "COde-Dataset", num_checkups=48, seed=1,
                                      profile="code", photo_size=(1280, 960))
    out = tmp_path_factory.mktemp("code-shards")
    build_shards(release, out, salt="test-salt", val=0.25, test=0.25, seed=0, policy=ImagePolicy(long_side=1024),
                 workers=2, progress=False)
    return out
