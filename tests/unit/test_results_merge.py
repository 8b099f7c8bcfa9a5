"""A results folder keeps the variants of earlier runs (e.g. an endpoint) when they are comparable, and holds
everything needed to recompute every metric (the validation checkups and class probabilities included)."""

import json
from types import SimpleNamespace

import pytest

from dentvlm.evaluation.bootstrap import classification_intervals
from dentvlm.evaluation.clinical import ClinicalSettings, clinical_metrics
from dentvlm.evaluation.results import ResultsWriter, earlier_variants
from dentvlm.metrics.callbacks import ClassificationMetrics
from tests.unit.clinical_standin import CLASSES, datamodule, standin, variant_entry

SETTINGS = {"shards": "shards/demo", "split": "test", "classes": ["caries"], "multi_label": True,
            "modality": "both", "max_images": 8, "tasks": ["classification"], "bootstrap": 10, "few_shot": 2}


def write_folder(out, settings):
    metrics = {"settings": settings, "variants": {"gpt-4o": {"classification": {"subset_accuracy": 0.5}},
                                                  "base": {"classification": {"subset_accuracy": 0.1}}}}
    (out / "metrics.json").write_text(json.dumps(metrics))
    rows = [{"variant": "gpt-4o", "key": "k1", "task": "classification", "prompt": "p", "reference": "caries",
             "generated": "caries", "true_labels": ["caries"], "parsed_labels": ["caries"]},
            {"variant": "base", "key": "k1", "task": "classification", "prompt": "p", "reference": "caries",
             "generated": "?", "true_labels": ["caries"], "parsed_labels": None}]
    (out / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_comparable_variants_are_kept_with_their_predictions(tmp_path):
    write_folder(tmp_path, SETTINGS)
    kept = earlier_variants(tmp_path, {**SETTINGS, "tasks": ["classification", "report"], "bootstrap": 50})
    assert list(kept) == ["gpt-4o", "base"]
    assert kept["gpt-4o"]["classification"]["subset_accuracy"] == 0.5
    assert [p.generated for p in kept["gpt-4o"]["predictions"]] == ["caries"]
    assert kept["base"]["predictions"][0].parsed_labels is None


def test_other_inputs_start_afresh(tmp_path, capsys):
    write_folder(tmp_path, SETTINGS)
    assert earlier_variants(tmp_path, {**SETTINGS, "split": "val", "max_images": 4}) == {}
    assert "other split, max_images" in capsys.readouterr().out
    assert earlier_variants(tmp_path / "missing", SETTINGS) == {}
    (tmp_path / "metrics.json").write_text("{broken")
    assert earlier_variants(tmp_path, SETTINGS) == {}


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """A folder written by `ResultsWriter.write`: a variant with probabilities and validation checkups, one
    without probabilities, one without validation checkups."""
    out = tmp_path_factory.mktemp("results")
    writer = ResultsWriter(out_dir=str(out), bootstrap=20, target_sensitivity=0.85, min_group_size=15)
    writer.variants = {"fine-tuned": variant_entry(standin(200, 0) + standin(150, 1, "val")),
                       "base": variant_entry(standin(200, 0, probabilities=False)),
                       "gpt-4o": variant_entry(standin(200, 5))}
    writer.write(datamodule())
    return out, writer


def test_round_trip_reads_back_probabilities_splits_and_groups(written):
    out, writer = written
    kept = earlier_variants(out, writer.settings(datamodule()))
    assert list(kept) == ["fine-tuned", "base", "gpt-4o"]
    for name, entry in kept.items():
        assert entry["predictions"] == writer.variants[name]["predictions"], name
    tuned = kept["fine-tuned"]["predictions"]
    assert [p.split for p in tuned].count("val") == 150
    assert tuned[0].class_probabilities == standin(200, 0)[0].class_probabilities and tuned[0].groups["gender"]
    assert kept["base"]["predictions"][0].class_probabilities is None


def test_every_clinical_metric_can_be_recomputed_from_the_files(written):
    out, writer = written
    metrics = json.loads((out / "metrics.json").read_text())
    settings = metrics["settings"]
    assert (settings["target_sensitivity"], settings["min_group_size"], settings["calibration_bins"]) == (0.85, 15, 10)
    kept = earlier_variants(out, writer.settings(datamodule()))
    again = ClinicalSettings(0.85, 15, 10, bootstrap=20, seed=0)
    for name, entry in metrics["variants"].items():
        assert entry["clinical"] == json.loads(json.dumps(
            clinical_metrics(kept[name]["predictions"], CLASSES, True, again))), name
    assert "not_available" in metrics["variants"]["base"]["clinical"]["discrimination"]
    youden = metrics["variants"]["gpt-4o"]["clinical"]["operating_points"]["youden"]
    assert "no validation-split" in youden["not_available"]
    files = {path.name for path in out.iterdir()}
    for variant in ("", "_fine-tuned", "_gpt-4o"):
        assert {f"roc{variant}.png", f"precision_recall{variant}.png"} <= files
    assert {"reliability_fine-tuned.png", "reliability_gpt-4o.png"} <= files
    assert not {"reliability_base.png", "roc_base.png"} & files  # no probabilities, no figure


def test_kept_variants_are_rescored_under_new_settings(written, tmp_path):
    out, _ = written
    for name in ("metrics.json", "predictions.jsonl"):
        (tmp_path / name).write_bytes((out / name).read_bytes())
    (tmp_path / "roc_base.png").write_bytes(b"an earlier run's")  # base has no probabilities now
    writer = ResultsWriter(out_dir=str(tmp_path), bootstrap=20, target_sensitivity=0.95, min_group_size=15)
    writer.variants = earlier_variants(tmp_path, writer.settings(datamodule()))
    writer.write(datamodule())
    clinical = json.loads((tmp_path / "metrics.json").read_text())["variants"]["fine-tuned"]["clinical"]
    assert clinical["settings"]["target_sensitivity"] == 0.95
    assert clinical["operating_points"]["target_sensitivity"]["target"] == 0.95
    assert not (tmp_path / "roc_base.png").exists() and (tmp_path / "roc_fine-tuned.png").is_file()


def test_validation_checkups_enter_no_test_metric(tmp_path):
    """The writer's classification entry and intervals count the test split only."""
    test, val = standin(60, 0), standin(40, 1, "val")
    callback = ClassificationMetrics()
    callback.results["test"] = variant_entry(test)["classification"]
    trainer = SimpleNamespace(world_size=1, is_global_zero=True, datamodule=datamodule(), callbacks=[callback],
                              loggers=[], global_step=0, default_root_dir=str(tmp_path))
    writer = ResultsWriter(out_dir=str(tmp_path), bootstrap=30, keep_variants=False)
    writer._predictions = test + val
    writer.on_test_end(trainer, SimpleNamespace(variant="fine-tuned"))
    entry = json.loads((tmp_path / "metrics.json").read_text())["variants"]["fine-tuned"]
    assert entry["classification"]["samples"] == 60
    intervals = classification_intervals(test, CLASSES, True, 30, 0)
    assert entry["classification"]["ci"] == {k: list(v) for k, v in intervals.items()}
    assert (entry["clinical"]["samples"], entry["clinical"]["val_samples"]) == (60, 40)
    lines = (tmp_path / "predictions.jsonl").read_text().splitlines()
    assert sum(json.loads(line)["split"] == "val" for line in lines) == 40
