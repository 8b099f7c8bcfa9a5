"""Metric state syncs across processes: two ranks, each with half of the predictions (one rank with
no report predictions at all), give the numbers one process gets on all of them."""

import json
import multiprocessing

import pytest
import torch.distributed as dist
import torch.multiprocessing as mp

from dentvlm.metrics.classification import ClassificationScores
from dentvlm.metrics.report import ReportScores

CLASSES = ["caries", "gingivitis", "pulpitis"]
PARSED = [["caries"], ["gingivitis"], None, ["caries", "pulpitis"], ["pulpitis"], ["caries"]]
TRUTH = [["caries"], ["caries"], ["gingivitis"], ["pulpitis"], ["pulpitis"], ["gingivitis"]]
GENERATED = ["diagnosis: caries of 36", "diagnosis: gingivitis", "diagnosis: pulpitis of 46 and caries"]
REFERENCES = ["diagnosis: deep caries of 36", "diagnosis: chronic gingivitis", "diagnosis: pulpitis of 46"]
FOUND = [["caries"], ["gingivitis"], ["caries", "pulpitis"]]


def compute(rank: int, world: int) -> dict:
    out = {}
    for multi in (False, True):
        scores = ClassificationScores(CLASSES, multi_label=multi)
        scores.update(PARSED[rank::world], TRUTH[rank::world])
        out[f"multi={multi}"] = scores.compute()
    report = ReportScores(CLASSES, ["all-MiniLM-L6-v2"])
    if rank == 0:  # the other rank has no report predictions and must still join the sync
        report.update(GENERATED, REFERENCES, FOUND, FOUND[:2] + [["pulpitis"]])
    out["report"] = report.compute()
    return out


def _rank_main(rank: int, init_file: str, result_file: str) -> None:
    multiprocessing.set_start_method("fork", force=True)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    result = compute(rank, 2)
    if rank == 0:
        with open(result_file, "w") as handle:
            json.dump(result, handle)
    dist.destroy_process_group()


@pytest.mark.slow
def test_two_processes_match_one(tmp_path):
    mp.spawn(_rank_main, args=(str(tmp_path / "init"), str(tmp_path / "result.json")), nprocs=2, join=True)
    synced = json.loads((tmp_path / "result.json").read_text())
    single = json.loads(json.dumps(compute(0, 1)))
    assert synced.keys() == single.keys()
    for key in single:
        for name, value in single[key].items():
            if isinstance(value, float):
                assert synced[key][name] == pytest.approx(value, abs=1e-6), (key, name)
            else:
                assert synced[key][name] == value, (key, name)
    assert single["multi=False"]["samples"] == 6 and single["report"]["finding_macro_f1"] > 0
