"""dentvlm's FSDP2 plan in two real processes (gloo, CPU), without Lightning in the way:

- rank 0 alone reads the weights (`load_sharded`); rank 1 builds on the meta device and gets its
  shards by broadcast, and both end with the weights the checkpoint holds, really sharded;
- a tied lm_head / embedding (Qwen2.5-VL-3B) stays one parameter, before and after an optimizer step;
- a rank whose batch has no image still runs the vision tower's collectives (the keep-alive), with
  the loss it would have without the dummy image, instead of hanging the other rank.
"""

import json
import os
import shutil
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from dentvlm.data.collate import pad_batch
from dentvlm.model.finetune import FinetuneSpec, apply_finetuning
from dentvlm.model.inputs import model_inputs, with_vision_keepalive
from dentvlm.model.loss import answer_loss
from dentvlm.model.parallel import load_sharded

WORLD = 2


def make_tied_model(tiny_model_dir, out) -> None:
    """The tiny model with lm_head tied to the input embeddings, as Qwen2.5-VL-3B has it."""
    from transformers import AutoConfig, AutoModelForImageTextToText

    config = AutoConfig.from_pretrained(tiny_model_dir)
    config.tie_word_embeddings = True
    torch.manual_seed(0)
    AutoModelForImageTextToText.from_config(config).save_pretrained(out)
    for path in tiny_model_dir.iterdir():  # the processor files
        if not (out / path.name).exists():
            shutil.copy(path, out / path.name)


def batches(model_dir) -> tuple[dict, dict]:
    """Rank 0's batch has images; rank 1's has none (a text-only ablation on one rank)."""
    from dentvlm.data.datamodule import DentDataModule
    from tests.conftest import DEMO_SHARDS

    with_images = DentDataModule(shards=str(DEMO_SHARDS), processor_path=str(model_dir), num_workers=0, max_images=2)
    text_only = DentDataModule(shards=str(DEMO_SHARDS), processor_path=str(model_dir), num_workers=0,
                               modality="text")
    out = []
    for dm in (with_images, text_only):
        dm.setup()
        items = [e for _, e in zip(range(2), dm.stream("train", "classification", training=True))]
        out.append(pad_batch(items, dm.encoder.pad_id))
    return out[0], out[1]


def _rank_main(rank: int, model_dir: str, init_file: str, result_dir: str) -> None:
    from torch.distributed.device_mesh import init_device_mesh
    from transformers import AutoConfig, AutoModelForImageTextToText

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD,
                            timeout=timedelta(seconds=120))  # a desynchronised collective fails, not hangs
    mesh = init_device_mesh("cpu", (WORLD,))
    loads = []

    def load():
        loads.append(rank)
        return AutoModelForImageTextToText.from_pretrained(model_dir)

    def build_on_meta():
        return AutoModelForImageTextToText.from_config(AutoConfig.from_pretrained(model_dir))

    def prepare(model):
        model = apply_finetuning(model, FinetuneSpec(mode="full", vision="full"))
        return model, model

    model = load_sharded(load, build_on_meta, prepare, mesh, torch.device("cpu"))
    reference = AutoModelForImageTextToText.from_pretrained(model_dir)  # what every rank should now hold
    full = {name: p.full_tensor() for name, p in model.named_parameters()}
    same = all(torch.equal(full[name], p) for name, p in reference.named_parameters())
    local = sum(p.to_local().numel() for p in model.parameters())
    tied_before = model.lm_head.weight is model.get_input_embeddings().weight

    mine = batches(model_dir)[rank]
    had_images = "pixel_values" in mine
    config = model.config.vision_config
    image_token = _image_token(model_dir)
    inputs, labels = with_vision_keepalive(model_inputs(mine), mine["labels"], image_token, config, left=False)
    loss, tokens = answer_loss(model, inputs, labels)
    loss.backward()
    expected, _ = answer_loss(reference, model_inputs(mine), mine["labels"])  # without the dummy image
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    tied_after = model.lm_head.weight is model.get_input_embeddings().weight
    head, embed = model.lm_head.weight.full_tensor(), model.get_input_embeddings().weight.full_tensor()
    result = {
        "loads": loads, "same_weights": same, "local": local,
        "total": sum(p.numel() for p in reference.parameters()),
        "tied": [tied_before, tied_after, torch.equal(head, embed)],
        "had_images": had_images, "loss": loss.item(), "expected": expected.item(),
        "vision_grad": any(p.grad is not None for n, p in model.named_parameters() if "visual" in n),
    }
    with open(f"{result_dir}/rank{rank}.json", "w") as handle:
        json.dump(result, handle)
    dist.destroy_process_group()


def _image_token(model_dir: str) -> int:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir).convert_tokens_to_ids("<|image_pad|>")


@pytest.mark.slow
def test_rank0_loading_tied_weights_and_vision_keepalive(tiny_model_dir, tmp_path):
    model_dir = tmp_path / "tied"
    make_tied_model(tiny_model_dir, model_dir)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    mp.spawn(_rank_main, args=(str(model_dir), str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD, join=True)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(WORLD)]
    assert [r["loads"] for r in ranks] == [[0], []]  # rank 1 never read the weights
    assert all(r["same_weights"] for r in ranks)
    assert all(r["local"] <= r["total"] // WORLD + 1000 for r in ranks)  # each rank holds about half
    assert all(r["tied"] == [True, True, True] for r in ranks)
    assert [r["had_images"] for r in ranks] == [True, False]
    for r in ranks:
        assert r["loss"] == pytest.approx(r["expected"], rel=1e-5)
        assert r["vision_grad"]  # the vision tower took part in backward on both ranks
