"""The DataModule in two real processes (torch.distributed, gloo): equal batch counts on both ranks,
more DataLoader workers than shards, and no validation sample seen twice in an epoch."""

import json
import multiprocessing
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from dentvlm.data.datamodule import DentDataModule

WORLD = 2
WORKERS = 3


def _rank_main(rank: int, shards: str, init_file: str, result_file: str) -> None:
    # mp.spawn children inherit the "spawn" start method, which would re-import everything in every
    # DataLoader worker; torchrun/Lightning-launched ranks fork their workers, as here.
    multiprocessing.set_start_method("fork", force=True)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    dm = DentDataModule(shards=shards, batch_size=2, num_workers=WORKERS)
    dm.rank, dm.world_size = dist.get_rank(), dist.get_world_size()
    report = {}
    for split, training in (("train", True), ("val", False)):
        loader = dm._loader(dm.stream(split, "classification", training=training))
        batches = list(loader)
        report[split] = {
            "batches": len(batches),
            "announced": len(loader),
            "keys": [e.key for b in batches for e in b if not e.is_padding],
            "shards": len(dm.manifest["splits"][split]["shards"]),
        }
    gathered = [None] * WORLD
    dist.all_gather_object(gathered, report)
    if rank == 0:
        with open(result_file, "w") as handle:
            json.dump(gathered, handle)
    dist.destroy_process_group()


@pytest.mark.slow
def test_two_processes_more_workers_than_shards(small_shards, tmp_path):
    result = tmp_path / "result.json"
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    mp.spawn(_rank_main, args=(str(small_shards), str(tmp_path / "init"), str(result)), nprocs=WORLD, join=True)
    ranks = json.loads(result.read_text())
    dm = DentDataModule(shards=str(small_shards))
    for split in ("train", "val"):
        assert ranks[0][split]["shards"] < WORLD * WORKERS
        counts = [r[split]["batches"] for r in ranks]
        assert counts[0] == counts[1] > 0 and counts == [r[split]["announced"] for r in ranks]
        seen = [k for r in ranks for k in r[split]["keys"]]
        assert len(seen) == len(set(seen)) == dm.split_size(split, "classification")
    assert not set(ranks[0]["val"]["keys"]) & set(ranks[1]["val"]["keys"])
    assert torch.distributed.is_available()
