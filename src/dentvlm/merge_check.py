"""How much of the fine-tuning a merged export keeps, measured on real prompts.

A LoRA update is small beside the weights it is added to (std ~1e-4 on weights of std ~0.02): merged
into bfloat16 weights, whose spacing near 0.02 is ~1.2e-4, a third of its elements round away. The
check compares the logits of the merged export with those of the base model plus the unmerged adapter
(what `dentvlm test` and `dentvlm serve` compute), relative to what the adapter changes at all:

    error = ||logits(merged) - logits(adapter)|| / ||logits(adapter) - logits(base)||

over the last positions of a few real prompts (the run's own shards when they are readable here, else a
synthetic checkup). 0 keeps the fine-tuning exactly; 1 loses as much as the fine-tuning changed. Both
models compute in float32 (the merged weights upcast exactly), so the error is the merge's, not a
difference of arithmetic. An adapter that changes the logits less than float32 noise (an untrained one)
has nothing to lose: its error is 0.
"""

from __future__ import annotations

import gc
from pathlib import Path

import torch

POSITIONS = 32  # logits compared per prompt: the answer's neighbourhood, not all 152 k x 4 k of them
PROMPTS = 2
NOISE = 1e-5  # float32 arithmetic changes logits by about this much of their norm


def verification_batch(folder: Path, processor) -> dict:
    """Model inputs for `PROMPTS` checkups formatted as the run trained (task, classes, image budget)."""
    from dentvlm.data.collate import ChatEncoder, pad_batch
    from dentvlm.data.tasks import format_checkup, select_images
    from dentvlm.inference.load import read_json, run_data_settings
    from dentvlm.labels import DEFAULT_CLASSES
    from dentvlm.model.inputs import PixelNormalizer, model_inputs

    data = run_data_settings(folder)
    classes = tuple(read_json(folder / "labels.json").get("classes") or DEFAULT_CLASSES)
    task = read_json(folder / "dentvlm.json").get("task") or "classification"
    task = task if task in ("classification", "report") else "classification"
    encoder = ChatEncoder(processor, data.get("cutoff_len") or 4096, "error", data.get("min_pixels"),
                          data.get("max_pixels"))
    items = []
    for checkup, images in _checkups(data.get("shards")):
        shown = [images[i] for i in select_images(checkup, ("photograph", "radiograph"), data.get("max_images") or 8)]
        example = format_checkup(checkup, shown, task, classes)
        items.append(encoder.encode(example, training=False))
    batch = pad_batch(items, encoder.pad_id)
    # The prompts, left-padded with their mask: every row's last positions are its own tokens
    return model_inputs(batch, generation=True, pixels=PixelNormalizer(processor.image_processor))


def _checkups(shards: str | None):
    """`PROMPTS` (checkup, images) from the run's shards (val, test, then train), else synthetic ones."""
    from dentvlm.data.shards import decode_image, iter_shard
    from dentvlm.sharding import load_manifest

    found = []
    try:
        manifest = load_manifest(Path(shards)) if shards else None
    except (OSError, ValueError):
        manifest = None
    for split in ("val", "test", "train") if manifest else ():
        for shard in manifest["splits"].get(split, {}).get("shards", []):
            try:
                for sample in iter_shard(Path(shards) / shard["file"]):
                    images = [decode_image(data, sample.where) for data in sample.images]
                    found.append((sample.checkup, images))
                    if len(found) == PROMPTS:
                        return found
            except (OSError, ValueError):
                break
    return found + [_synthetic(n) for n in range(PROMPTS - len(found))]


def _synthetic(seed: int):
    """A checkup with one textured photograph and clinical text, for runs whose shards are not here."""
    import numpy as np
    from PIL import Image

    from dentvlm.records import Checkup

    rng = np.random.default_rng(seed)
    pixels = (rng.random((224, 308, 3)) * 255).astype(np.uint8)
    checkup = Checkup(key=f"check{seed}", patient="-", modalities=["photograph"],
                      info={"age": "34", "chief_complaint": "Bleeding gums when brushing"},
                      report={"examination": "Gingival redness and swelling around 31-41."})
    return checkup, [Image.fromarray(pixels)]


def last_logits(model: torch.nn.Module, inputs: dict) -> torch.Tensor:
    """(B, POSITIONS, V) float32 logits of the last positions, computed on the model's device, returned on
    the CPU."""
    device = next(model.parameters()).device
    inputs = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
    with torch.no_grad():
        return model(**inputs, logits_to_keep=POSITIONS, use_cache=False).logits.float().cpu()


def check_device() -> str:
    """A GPU when there is one: the float32 forwards of a 7B take minutes on a CPU."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def merge_error(merged_folder: Path, checkpoint_folder: Path, base_model: str) -> float:
    """`error` of the module docstring for the merged export in `merged_folder`.

    Raises:
        ValueError: the merged export does not load as its users will load it (`load_full_export`).
    """
    from transformers import AutoProcessor

    from dentvlm.export import load_adapter, load_full_export
    from dentvlm.model.build import load_vlm

    inputs = verification_batch(checkpoint_folder, AutoProcessor.from_pretrained(checkpoint_folder))
    adapted = load_adapter(load_vlm(base_model, dtype="float32"), checkpoint_folder).to(check_device()).eval()
    with_adapter = last_logits(adapted, inputs)
    with adapted.disable_adapter():
        base = last_logits(adapted, inputs)
    del adapted
    gc.collect()
    merged = load_full_export(merged_folder, torch.float32).to(check_device()).eval()
    merged_logits = last_logits(merged, inputs)
    del merged
    gc.collect()
    effect = torch.linalg.vector_norm(with_adapter - base)
    if effect <= NOISE * torch.linalg.vector_norm(base):
        return 0.0
    return float(torch.linalg.vector_norm(merged_logits - with_adapter) / effect)
