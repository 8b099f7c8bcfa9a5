"""`dentvlm test`: the results folder with baselines, and no patient identity in any output."""

import csv
import json

import pytest

from dentvlm.cli import main

from .conftest import REPO


@pytest.mark.slow
def test_results_folder_with_baselines(trained_run, tmp_path):
    out = tmp_path / "results"
    main(["test", "--config", str(REPO / "configs" / "tiny.yaml"),
          "--ckpt_path", str(trained_run / "checkpoints" / "last.ckpt"),
          "--trainer.logger", "lightning.pytorch.loggers.CSVLogger", "--trainer.logger.save_dir", str(tmp_path),
          "--data.eval_tasks", "[classification, report]", "--data.num_workers", "0",
          "--model.max_new_tokens", "8", "--results.out_dir", str(out), "--results.bootstrap", "50",
          "--results.few_shot", "1"])
    metrics = json.loads((out / "metrics.json").read_text())
    assert list(metrics["variants"]) == ["fine-tuned", "base", "base_few_shot"]
    for variant in metrics["variants"].values():
        classification, report = variant["classification"], variant["report"]
        assert classification["samples"] == 60 and report["samples"] == 60
        low, high = classification["ci"]["subset_accuracy"]
        assert 0 <= low <= classification["subset_accuracy"] <= high <= 1
        assert {"bleu4", "meteor", "rouge_l", "embedding_similarity", "finding_macro_f1"} <= set(report)
        assert "word level" in report["tokenization"]
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    tested = [r for r in rows if r["split"] == "test"]
    assert len(tested) == 3 * 2 * 60 and len(rows) - len(tested) == 3 * 45  # + the validation checkups scored
    assert set(rows[0]) == {"variant", "key", "task", "prompt", "reference", "generated", "true_labels",
                            "parsed_labels", "negated_labels", "uncertain_labels", "class_probabilities", "split",
                            "groups"}
    probabilities = [r["class_probabilities"] for r in tested if r["task"] == "classification"]
    assert all(set(p) == set(metrics["settings"]["classes"]) and all(0 <= v <= 1 for v in p.values())
               for p in probabilities)
    for variant in metrics["variants"].values():
        assert variant["clinical"]["discrimination"]["macro"]["auroc"] is not None
    few_shot = next(r for r in tested if r["variant"] == "base_few_shot" and r["task"] == "classification")
    zero_shot = next(r for r in tested if r["variant"] == "base" and r["key"] == few_shot["key"]
                     and r["task"] == "classification")
    assert few_shot["prompt"].count("Which of these") == 2 and zero_shot["prompt"].count("Which of these") == 1
    report_md = (out / "report.md").read_text()
    assert "| fine-tuned | 60 |" in report_md and "## Report generation" in report_md
    for name in ("confusion_fine-tuned.png", "confusion_base.png", "per_class_f1.png"):
        assert (out / name).stat().st_size > 1000


@pytest.mark.slow
def test_no_patient_identity_in_logs_wandb_or_results(synth_release, small_shards, tmp_path):
    from .conftest import fit_args

    run = tmp_path / "run"
    args = fit_args(run, "--data.shards", str(small_shards), "--trainer.max_epochs", "1",
                    "--data.batch_size", "2", "--data.eval_tasks", "[classification, report]")
    logger = args.index("lightning.pytorch.loggers.CSVLogger")
    args[logger:logger + 3] = ["lightning.pytorch.loggers.WandbLogger", "--trainer.logger.save_dir", str(run)]
    args += ["--trainer.logger.offline", "true", "--results.out_dir", str(run / "results")]
    main(args)
    test_args = ["test" if a == "fit" else a for a in args] + ["--ckpt_path", str(run / "checkpoints" / "last.ckpt"),
                                                              "--results.bootstrap", "10"]
    main(test_args)
    with (synth_release / "complete_dataset.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    identifiers = {r["patient_id"] for r in rows} | {r["checkup_id"] for r in rows}
    identifiers |= {name for r in rows for name in r["photographs"].split(",")}
    written = [p for p in run.rglob("*") if p.is_file()]
    assert any("wandb" in str(p) for p in written) and (run / "results" / "predictions.jsonl").is_file()
    for path in written:
        data = path.read_bytes()
        leaked = [i for i in identifiers if i.encode() in data]
        assert not leaked, (path, leaked[:3])
