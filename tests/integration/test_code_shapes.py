"""The shipped recipes' data settings on checkups shaped like COde's, through the real processor
geometry (the tiny model's processor has Qwen's patch 14 / merge 2, so token counts are a 7B's).

Before the image budget, a sample over `cutoff_len` at max_pixels was dropped: with the 7B settings
that was most checkups with six or more photos."""

from pathlib import Path

import pytest
import yaml

from dentvlm.data.datamodule import DentDataModule
from dentvlm.data.shards import iter_shard

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
DATA_KEYS = ("cutoff_len", "max_images", "image_modalities", "min_pixels", "max_pixels")


def recipe(name: str) -> dict:
    data = yaml.safe_load((CONFIGS / name).read_text())["data"]
    return {key: data[key] for key in DATA_KEYS if key in data}


def module(shards, tiny_model_dir, **settings) -> DentDataModule:
    dm = DentDataModule(shards=str(shards), processor_path=str(tiny_model_dir), batch_size=2, num_workers=0,
                        **settings)
    dm.setup()
    return dm


def read(dm: DentDataModule, split: str, task: str, training: bool):
    examples = list(dm.stream(split, task, training))
    return [e for e in examples if not e.is_padding], sum(e.dropped_before for e in examples)


def stored_samples(shards: Path, split: str) -> dict:
    return {s.checkup.key: s for shard in sorted(shards.glob(f"{split}-*.tar")) for s in iter_shard(shard)}


def old_rule_drops(kept, cutoff: int) -> int:
    """Samples the old encoder dropped: every image at max_pixels, prompt over the cutoff."""
    return sum(e.prompt_len + e.unscaled_image_tokens - e.image_tokens >= cutoff for e in kept)


def test_fixture_is_code_shaped(code_shards):
    photos = [sample.checkup.modalities.count("photograph") for split in ("train", "val", "test")
              for shard in sorted(code_shards.glob(f"{split}-*.tar")) for sample in iter_shard(shard)]
    assert len(photos) == 48 and 4.8 <= sum(photos) / len(photos) <= 6.5 and max(photos) == 8


def test_the_3b_recipe_reads_data_as_the_7b_one():
    assert recipe("qwen3b.yaml") == recipe("qwen7b.yaml")


@pytest.mark.parametrize("config, task", [("qwen7b.yaml", "classification"), ("qwen7b.yaml", "report"),
                                          ("tiny.yaml", "classification")])
def test_recipes_keep_every_code_shaped_checkup_and_every_image(code_shards, tiny_model_dir, config, task):
    settings = recipe(config)
    dm = module(code_shards, tiny_model_dir, task=task, **settings)
    cutoff = dm.hparams.cutoff_len
    for split, training in (("train", True), ("val", False)):
        kept, dropped = read(dm, split, task, training)
        assert dropped == 0 and len(kept) == dm.split_size(split, task)
        assert all(len(e) <= cutoff and not e.truncated for e in kept)
        samples = stored_samples(code_shards, split)
        for e in kept:  # every chosen image is there, whole
            modalities = samples[e.key].checkup.modalities
            shown = min(sum(m in dm.hparams.image_modalities for m in modalities), dm.hparams.max_images)
            assert (0 if e.image_grid_thw is None else len(e.image_grid_thw)) == shown
        if config == "qwen7b.yaml" and training:  # the 7B bound is where checkups used to be lost
            assert any(e.scaled for e in kept)
            assert old_rule_drops(kept, cutoff) >= len(kept) // 4


@pytest.mark.parametrize("context_len", [128_000, None], ids=["7b-context", "tiny-context-4096"])
def test_few_shot_prompts_fit_the_context_on_code_shaped_checkups(code_shards, tiny_model_dir, context_len):
    dm = module(code_shards, tiny_model_dir, few_shot=2, context_len=context_len, **recipe("qwen7b.yaml"))
    kept, dropped = read(dm, "test", "classification", training=False)
    assert dropped == 0 and len(kept) == dm.split_size("test", "classification")
    context = dm.encoder.context_len
    assert all(len(e) <= context for e in kept)
    query_side = max(max(h, w) for e in kept for _, h, w in e.image_grid_thw[-1:].tolist())
    demo_side = max(max(h, w) for e in kept for _, h, w in e.image_grid_thw[:-1].tolist())
    assert demo_side <= query_side
    if context_len:  # the training cutoff does not cut a generation prompt: longer prompts are kept whole
        assert any(e.prompt_len > dm.hparams.cutoff_len for e in kept)
