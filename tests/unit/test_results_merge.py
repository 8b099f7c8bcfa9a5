"""A results folder keeps the variants of earlier runs (e.g. an endpoint) when they are comparable."""

import json

from dentvlm.evaluation.results import earlier_variants

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
