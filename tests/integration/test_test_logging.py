"""`dentvlm test` logs each variant (fine-tuned, base, base_few_shot) under its own name in W&B and the CSV,
with a table of its predictions and its plots; the terminal shows one compact block per variant, where
the results are and where its own logs went; metrics.json says exactly which checkpoint it scored."""

import csv
import hashlib
import json

import pytest

from dentvlm.cli import main

from .conftest import REPO
from .wandb_records import run_contents

VARIANTS = ("fine-tuned", "base", "base_few_shot")


@pytest.fixture(scope="module")
def tested(trained_run, tmp_path_factory):
    run = tmp_path_factory.mktemp("tested")
    checkpoint = trained_run / "checkpoints" / "last.ckpt"
    main(["test", "--config", str(REPO / "configs" / "tiny.yaml"), "--ckpt_path", str(checkpoint),
          "--trainer.default_root_dir", str(run), "--data.num_workers", "0", "--trainer.limit_test_batches", "1",
          "--model.max_new_tokens", "4", "--results.bootstrap", "20", "--results.few_shot", "1"])
    return run, checkpoint


def test_each_variant_has_its_own_keys_in_wandb_and_csv(tested):
    run, _ = tested
    [offline] = (run / "wandb").glob("offline-run-*")
    contents = run_contents(offline)
    for variant in VARIANTS:
        for metric in ("subset_accuracy", "micro_f1", "macro_f1", "loss", "unparseable"):
            assert f"test/{variant}/classification/{metric}" in contents["summary"], (variant, metric)
    assert not any(key.startswith("test/classification/") and not key.startswith("test/classification/per_class_f1")
                   for key in contents["summary"])  # nothing logged without its variant's name
    [metrics_csv] = run.rglob("metrics.csv")
    columns = next(csv.reader(metrics_csv.open()))
    assert {f"test/{v}/classification/subset_accuracy" for v in VARIANTS} <= set(columns)


def test_wandb_holds_a_prediction_table_and_plots_per_variant_inside_the_run_folder(tested):
    run, _ = tested
    [offline] = (run / "wandb").glob("offline-run-*")
    contents = run_contents(offline)
    for variant in VARIANTS:
        table = contents["tables"][f"test/{variant}/classification/predictions"]
        assert table["columns"][:5] == ["key", "images", "prompt", "reference", "generated"]
        assert "correct" in table["columns"] and len(table["data"]) == 16
        assert contents["images"][f"test/{variant}/classification/confusion_matrix"].stat().st_size > 1000
    assert "test/classification/per_class_f1" in contents["images"]
    staged = list((run / "wandb" / "data").rglob("*"))  # W&B's artifact staging: tables and their images
    assert any(p.is_file() and p.read_bytes()[:4] == b"\x89PNG" for p in staged)


def test_metrics_json_names_the_checkpoint_it_scored(tested):
    run, checkpoint = tested
    details = json.loads((run / "results" / "metrics.json").read_text())["variants"]
    scored = details["fine-tuned"]["details"]["checkpoint"]
    assert scored == {"path": str(checkpoint.resolve()), "sha256": hashlib.sha256(checkpoint.read_bytes()).hexdigest()}
    assert "checkpoint" not in details["base"]["details"]  # the adapter was off
    assert details["base"]["details"]["base_model_identity"]["model_type"] == "qwen2_5_vl"


def test_the_terminal_shows_one_block_per_variant_and_the_results_folder(trained_run, tmp_path, capsys):
    main(["test", "--config", str(REPO / "configs" / "tiny.yaml"),
          "--ckpt_path", str(trained_run / "checkpoints" / "last.ckpt"), "--trainer.default_root_dir", str(tmp_path),
          "--trainer.logger", "lightning.pytorch.loggers.CSVLogger", "--trainer.logger.save_dir", str(tmp_path),
          "--data.num_workers", "0", "--trainer.limit_test_batches", "1", "--model.max_new_tokens", "2",
          "--results.bootstrap", "0", "--results.baselines", "[base]"])
    out = capsys.readouterr().out
    assert "DataLoader 0" not in out and "Test metric" not in out  # no Lightning tables
    blocks = [line for line in out.splitlines() if line.startswith(("fine-tuned", "base"))]
    assert [b.split()[0] for b in blocks] == ["fine-tuned", "base"]
    assert "classification (16 checkups" in out and "Subset acc." in out
    assert f"results: {tmp_path / 'results'}/report.md" in out
    [logged] = [line.split("metrics: ")[1] for line in out.splitlines() if line.startswith("  metrics: ")]
    assert logged.endswith("metrics.csv") and "test/fine-tuned/classification/subset_accuracy" in open(logged).read()
