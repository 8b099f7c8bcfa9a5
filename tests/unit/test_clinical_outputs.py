"""The clinical metrics in report.md and W&B: the numbers of metrics.json, "n/a" where not defined, "not
available" where a variant lacks what a metric needs, never a 0 in their place."""

import pytest

from dentvlm.evaluation.clinical import ClinicalSettings, clinical_metrics
from dentvlm.evaluation.report import write_report_md
from dentvlm.evaluation.tables import CLINICAL_COLUMNS, SUBGROUP_COLUMNS, clinical_rows, log_clinical, subgroup_rows
from tests.unit.clinical_standin import CLASSES, standin

SETTINGS = ClinicalSettings(bootstrap=20)


@pytest.fixture(scope="module")
def variants():
    no_pulpitis = [type(p)(**{**p.__dict__, "true_labels": [c for c in p.true_labels if c != "pulpitis"]})
                   for p in standin(200, 0)]
    made = {"fine-tuned": standin(200, 0) + standin(150, 1, "val"), "base": standin(200, 0, probabilities=False),
            "gpt-4o": no_pulpitis}
    return {name: {"classification": {"samples": 200, "subset_accuracy": 0.5, "micro_f1": 0.5, "macro_f1": 0.5,
                                      "per_class_f1": [0.5] * 5},
                   "clinical": clinical_metrics(predictions, CLASSES, True, SETTINGS)}
            for name, predictions in made.items()}


@pytest.fixture(scope="module")
def report(variants, tmp_path_factory):
    path = tmp_path_factory.mktemp("report") / "report.md"
    settings = {"shards": "s", "split": "test", "modality": "both", "classes": CLASSES, "multi_label": True,
                "bootstrap": 20}
    write_report_md(path, {"settings": settings, "variants": variants})
    return path.read_text()


def section(report: str, name: str) -> str:
    return report.split(f"### {name}\n")[1].split("\n### ")[0]


def table_row(text: str, first: str) -> list[str]:
    line = next(line for line in text.splitlines() if line.startswith(f"| {first} |"))
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_class_table_holds_the_metrics(report, variants):
    clinical = variants["fine-tuned"]["clinical"]
    row = table_row(section(report, "fine-tuned"), "caries")
    caries = clinical["discrimination"]["per_class"]["caries"]
    low, high = caries["ci"]["auroc"]
    assert row[1] == f"{100 * caries['auroc']:.1f} [{100 * low:.1f}, {100 * high:.1f}]"
    youden = clinical["operating_points"]["youden"]["per_class"]["caries"]
    assert row[7] == f"{youden['threshold']:.3g}" and row[8] == f"{100 * youden['sensitivity']:.1f}"
    assert len(row) == 17 and table_row(section(report, "fine-tuned"), "macro")[7] == "-"
    assert "Sens≥90% thr." in report and "10 equal-width probability bins" in report


def test_not_available_and_not_defined_are_written_out(report):
    base = section(report, "base")
    assert "Probability metrics not available: no class probabilities" in base
    row = table_row(base, "caries")
    assert row[1:3] == ["not available"] * 2 and row[7:] == ["not available"] * 10 and row[3] != "not available"
    assert table_row(base, "gender | female")[5] == "not available"
    assert "no validation checkups" in section(report, "gpt-4o")
    assert "AUROC not defined (one truth value in the test split) for 1 class(es): pulpitis" in report
    assert table_row(section(report, "gpt-4o"), "pulpitis")[1:3] == ["n/a", "n/a"]
    assert table_row(report.split("### Calibration")[1], "base")[1:] == ["not available"] * 6


def test_subgroups_in_the_report(report, variants):
    text = section(report, "fine-tuned")
    assert table_row(text, "age_band | <18")[3:] == ["too few to score"] * 3
    gap = variants["fine-tuned"]["clinical"]["subgroups"]["largest_gaps"]["gender"]["subset_accuracy"]
    high, low = gap["high"], gap["low"]
    assert (f"- largest gap: gender, subset accuracy {100 * high['value']:.1f} ({high['group']}, n={high['n']}) vs "
            f"{100 * low['value']:.1f} ({low['group']}, n={low['n']})") in text


def test_wandb_rows(variants):
    rows = clinical_rows(variants["fine-tuned"]["clinical"], CLASSES)
    assert [r[0] for r in rows] == [*CLASSES, "macro"] and all(len(r) == len(CLINICAL_COLUMNS) for r in rows)
    caries = variants["fine-tuned"]["clinical"]["discrimination"]["per_class"]["caries"]
    assert rows[0][1:4] == [caries["auroc"], *caries["ci"]["auroc"]]
    base = clinical_rows(variants["base"]["clinical"], CLASSES)
    assert base[0][1:7] == [None] * 6 and base[0][7] is not None  # answers score, probabilities are null, not 0
    groups = subgroup_rows(variants["fine-tuned"]["clinical"]["subgroups"])
    assert all(len(r) == len(SUBGROUP_COLUMNS) for r in groups)
    assert ["age_band", "<18", 9, False] + [None] * 9 in groups


class Logger:
    def __init__(self):
        self.tables, self.metrics = {}, {}

    def log_table(self, key, columns, data, step):
        self.tables[key] = (columns, data)

    def log_metrics(self, metrics, step):
        self.metrics.update(metrics)


def test_log_clinical_keys(variants):
    logger = Logger()
    log_clinical(logger, "fine-tuned", variants["fine-tuned"]["clinical"], CLASSES, step=0)
    assert set(logger.tables) == {"test/fine-tuned/classification/clinical", "test/fine-tuned/classification/subgroups"}
    assert set(logger.metrics) == {f"test/fine-tuned/classification/{k}"
                                   for k in ("macro_auroc", "macro_average_precision", "ece_pooled")}
    logger = Logger()
    log_clinical(logger, "base", variants["base"]["clinical"], CLASSES, step=0)
    assert logger.metrics == {}  # nothing to log is logged as nothing, not as 0
