"""Batches cross from the DataLoader workers as a few buffers and come back as the same batch."""

import pickle

import torch

from dentvlm.data.datamodule import DentDataModule
from dentvlm.data.wire import WireBatch, from_wire, to_wire


def assert_same(got, expected, where="batch"):
    assert type(got) is type(expected), where
    if isinstance(expected, torch.Tensor):
        assert got.dtype == expected.dtype and got.shape == expected.shape and torch.equal(got, expected), where
    elif isinstance(expected, dict):
        assert got.keys() == expected.keys(), where
        for key in expected:
            assert_same(got[key], expected[key], f"{where}[{key!r}]")
    elif isinstance(expected, (list, tuple)):
        assert len(got) == len(expected), where
        for index, (a, b) in enumerate(zip(got, expected)):
            assert_same(a, b, f"{where}[{index}]")
    else:
        assert got == expected, where


def test_round_trip_keeps_every_value_and_packs_one_buffer_per_dtype():
    batch = {
        "input_ids": torch.arange(12).view(3, 4),
        "transposed": torch.arange(6).view(2, 3).T,  # not contiguous
        "empty": torch.zeros((0, 5), dtype=torch.long),
        "scalar": torch.tensor(7),
        "mask": torch.tensor([True, False]),
        "pixels": torch.randint(0, 255, (4, 6), dtype=torch.uint8),
        "plan": {"cu": torch.tensor([0, 4, 8], dtype=torch.int32), "longest": 4, "geometry": (2, 112, 14)},
        "meta": [{"key": "a", "labels": ["caries"], "thumbnail": None}],
    }
    assert all(buffer.is_shared() for buffer in to_wire(batch, shared=True).buffers.values())
    wire = pickle.loads(pickle.dumps(to_wire(batch)))
    assert isinstance(wire, WireBatch)
    assert sorted(map(str, wire.buffers)) == ["torch.bool", "torch.int32", "torch.int64", "torch.uint8"]
    assert wire.buffers[torch.int64].numel() == 12 + 6 + 0 + 1
    assert_same(from_wire(wire), batch)


def test_a_worker_hands_over_the_batches_it_would_make_in_process(small_shards, tiny_model_dir):
    def batches(workers):
        dm = DentDataModule(shards=str(small_shards), processor_path=str(tiny_model_dir), batch_size=3,
                            num_workers=workers)
        dm.setup("fit")
        return list(dm._loader(dm.stream("train", "classification", training=True)))

    in_process, from_worker = batches(0), batches(1)
    assert len(in_process) > 1 and all("vision_plan" in b and "pixel_values" in b for b in in_process)
    for got, expected in zip(from_worker, in_process, strict=True):
        assert_same(got, expected)


def test_the_pinning_thread_pins_the_buffers(monkeypatch):
    """On GPU runs the DataLoader pins each batch; a WireBatch pins its few buffers."""
    from torch.utils.data._utils.pin_memory import pin_memory

    pinned = []
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda self: pinned.append(self.dtype) or self.clone())
    wire = pin_memory(to_wire({"ids": torch.arange(4), "pixels": torch.zeros(3, dtype=torch.uint8), "n": 2}))
    assert isinstance(wire, WireBatch) and sorted(map(str, pinned)) == ["torch.int64", "torch.uint8"]
    assert_same(from_wire(wire), {"ids": torch.arange(4), "pixels": torch.zeros(3, dtype=torch.uint8), "n": 2})
