"""Metric state syncs across processes: two gloo ranks, each updating with its half of a fixed set of
predictions (or one rank with nothing at all), give the numbers one process gets on all of them."""

import json
import multiprocessing

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from dentvlm.metrics.classification import ClassificationScores
from dentvlm.metrics.report import ReportScores

CLASSES = ["caries", "gingivitis", "pulpitis", "periodontitis"]
# single-label: None is unparseable, [] and two labels are invalid
SINGLE_PARSED = [["caries"], ["gingivitis"], None, ["caries", "pulpitis"], ["pulpitis"], ["caries"], [],
                 ["gingivitis"], ["periodontitis"]]
SINGLE_TRUTH = [["caries"], ["caries"], ["gingivitis"], ["pulpitis"], ["pulpitis"], ["gingivitis"], ["caries"],
                ["gingivitis"], ["pulpitis"]]
MULTI_PARSED = [["caries", "gingivitis"], ["caries"], None, [], ["pulpitis", "periodontitis"], ["gingivitis"],
                ["caries", "pulpitis"], None, ["periodontitis"]]
MULTI_TRUTH = [["caries", "gingivitis"], ["caries", "pulpitis"], ["gingivitis"], [], ["periodontitis"],
               ["gingivitis"], ["caries", "pulpitis"], ["caries"], ["gingivitis", "periodontitis"]]
# generated report, reference report, labels parsed from the generated diagnosis, true labels
REPORTS = [
    ("examination: deep cavity on 36\ndiagnosis: caries", "examination: deep caries on 36\ndiagnosis: caries of 36",
     ["caries"], ["caries"]),
    ("examination: red gums\ndiagnosis: gingivitis and tooth decay",
     "examination: red swollen gums\ndiagnosis: gingivitis", ["caries", "gingivitis"], ["gingivitis"]),
    ("examination: pain on 46\ndiagnosis: hard to say", "examination: pain on 46\ndiagnosis: pulpitis of 46",
     None, ["pulpitis"]),
    ("examination: healthy teeth\ndiagnosis: no disease",
     "examination: bleeding on probing\ndiagnosis: periodontitis", [], ["periodontitis"]),
    ("examination: deep caries 47\ndiagnosis: pulpitis, caries",
     "examination: deep caries 47\ndiagnosis: caries and pulpitis", ["caries", "pulpitis"], ["caries", "pulpitis"]),
]


def half(items: list, rank: int, world: int) -> list:
    """Rank `rank`'s contiguous share (4 and 5 of 9 items, 2 and 3 of 5)."""
    return items[len(items) * rank // world:len(items) * (rank + 1) // world]


def only_rank_zero(items: list, rank: int, world: int) -> list:
    return items if rank == 0 else []


def compute(rank: int, world: int) -> dict:
    """Each case's results on this rank; one construction of each scores object, reset between cases."""
    torch.set_num_threads(1)
    single = ClassificationScores(CLASSES, multi_label=False)
    multi = ClassificationScores(CLASSES, multi_label=True)
    report = ReportScores(CLASSES, ["all-MiniLM-L6-v2"])
    out = {}
    cases = {
        "halves": (half, half),
        "reports on one rank": (half, only_rank_zero),  # the other rank never updates its ReportScores
        "everything on one rank": (only_rank_zero, only_rank_zero),
    }
    for case, (share, report_share) in cases.items():
        single.update(share(SINGLE_PARSED, rank, world), share(SINGLE_TRUTH, rank, world))
        multi.update(share(MULTI_PARSED, rank, world), share(MULTI_TRUTH, rank, world))
        mine = report_share(REPORTS, rank, world)
        report.update([g for g, _, _, _ in mine], [r for _, r, _, _ in mine], [p for _, _, p, _ in mine],
                      [t for _, _, _, t in mine])
        out[case] = {"single": single.compute(), "multi": multi.compute(), "report": report.compute()}
        for scores in (single, multi, report):
            scores.reset()
    return out


def _rank_main(rank: int, init_file: str, result_dir: str) -> None:
    multiprocessing.set_start_method("fork", force=True)  # spawned children would spawn their own children
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        result = compute(rank, 2)
        with open(f"{result_dir}/rank{rank}.json", "w") as handle:
            json.dump(result, handle)
    finally:
        dist.destroy_process_group()


def assert_close(actual, expected, where=()):
    if isinstance(expected, float):
        assert actual == pytest.approx(expected, abs=1e-6), where
    elif isinstance(expected, dict):
        assert actual.keys() == expected.keys(), where
        for key in expected:
            assert_close(actual[key], expected[key], (*where, key))
    elif isinstance(expected, list):
        assert len(actual) == len(expected), where
        for i, (a, e) in enumerate(zip(actual, expected)):
            assert_close(a, e, (*where, i))
    else:
        assert actual == expected, where


@pytest.fixture(scope="module")
def single_process() -> dict:
    return json.loads(json.dumps(compute(0, 1)))


@pytest.mark.slow
def test_two_processes_match_one(tmp_path, single_process):
    mp.spawn(_rank_main, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    rank0 = json.loads((tmp_path / "rank0.json").read_text())
    rank1 = json.loads((tmp_path / "rank1.json").read_text())
    assert_close(rank0, single_process)
    assert_close(rank1, single_process)  # every rank gets the synced numbers
    # the reference numbers are not trivial, and the same in every case
    for case in single_process.values():
        assert_close(case, single_process["halves"])
    single, multi, report = (single_process["halves"][k] for k in ("single", "multi", "report"))
    assert single["samples"] == 9 and single["unparseable"] == 1 and 0 < single["macro_f1"] < 1
    assert multi["samples"] == 9 and multi["unparseable"] == 2 and 0 < multi["macro_f1"] < 1
    assert report["unparseable_diagnosis"] == 1 and 0 < report["finding_macro_f1"] < 1
    assert 0 < report["bleu4"] < 1 and 0 < report["meteor"] < 1 and 0 < report["embedding_similarity"] < 1
