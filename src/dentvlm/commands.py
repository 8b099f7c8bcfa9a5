"""The non-training subcommands (`dentvlm synth`, `dentvlm shard`). Their signatures are the CLI:
jsonargparse turns each argument into a flag and each docstring line into its help text."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import sys
import threading
from pathlib import Path

from dentvlm.labels import DEFAULT_CLASSES


def synth(out: str, num_checkups: int = 300, seed: int = 0, profile: str = "demo", photo_width: int | None = None,
          photo_height: int | None = None, radiograph_width: int | None = None,
          radiograph_height: int | None = None) -> None:
    """Write a synthetic release in the real COde layout (complete_dataset.csv + Images/).

    Args:
        out: Folder to write (created; must be empty or hold an earlier synthetic release).
        num_checkups: Number of checkups (rows).
        seed: Random seed; the same seed writes byte-identical files.
        profile: demo (480x360 photos, short text) or code (COde's shapes: photos with a 1,024-2,000 px
            long side, 5.7 per checkup on average, 0-2 radiographs, records of COde's length).
        photo_width: Width of the intraoral photographs, in pixels (default: the profile's).
        photo_height: Height of the intraoral photographs, in pixels (default: the profile's).
        radiograph_width: Width of the radiographs, in pixels (default: the profile's).
        radiograph_height: Height of the radiographs, in pixels (default: the profile's).
    """
    from dentvlm.synth import write_synthetic_release

    photo = (photo_width, photo_height) if photo_width and photo_height else None
    radiograph = (radiograph_width, radiograph_height) if radiograph_width and radiograph_height else None
    path = write_synthetic_release(out, num_checkups=num_checkups, seed=seed, profile=profile,
                                   photo_size=photo, radiograph_size=radiograph)
    print(f"dentvlm synth: wrote {num_checkups} checkups to {path}", file=sys.stderr)


def shard(
    source: str,
    out: str,
    source_format: str = "auto",
    salt: str | None = None,
    classes: list[str] = list(DEFAULT_CLASSES),  # noqa: B006 (shown in --help; never mutated)
    val: float = 0.1,
    test: float = 0.15,
    seed: int = 0,
    image_long_side: int = 1024,
    jpeg_quality: int = 90,
    max_source_pixels: int = 80_000_000,
    max_count: int = 256,
    max_bytes: int = 1_000_000_000,
    strict: bool = False,
    workers: int | None = None,
    image_root: str | None = None,
    overwrite: bool = False,
) -> None:
    """Convert a COde release folder or a ShareGPT JSON file into WebDataset shards + manifest.json.

    Args:
        source: COde release folder (or its complete_dataset.csv), or a ShareGPT .json file.
        out: Output folder for {train,val,test}-NNNNNN.tar and manifest.json.
        source_format: auto, code or sharegpt.
        salt: Secret salt for patient/checkup pseudonyms (default: $DENTVLM_SALT, else a random one
            per run, which makes keys differ between runs). Never stored in the shards.
        classes: Label vocabulary of the classification task.
        val: Validation size: a fraction (< 1) or a number of checkups (>= 1).
        test: Test size: a fraction (< 1) or a number of checkups (>= 1), e.g. 600.
        seed: Seed of the patient-level split and of the order within shards.
        image_long_side: Images are resized so their longer side is at most this.
        jpeg_quality: JPEG quality of stored images.
        max_source_pixels: Source images declaring more pixels are rejected (decompression bombs).
        max_count: Maximum samples per shard. Training reads whole shards per data loader when there
            are at least ranks x workers of them (COde's ~7,000 training checkups: 28 shards of 256).
        max_bytes: Approximate maximum bytes per shard.
        strict: Stop at the first bad entry or image instead of skipping and counting it.
        workers: Image-processing processes (default: all cores).
        image_root: ShareGPT only: folder that image paths are relative to (default: the JSON's folder).
        overwrite: Replace shards already in `out`.
    """
    from dentvlm.ingest.images import ImagePolicy
    from dentvlm.sharding import build_shards

    if salt is None:
        salt = os.environ.get("DENTVLM_SALT")
    if not salt:
        salt = secrets.token_hex(16)
        print("dentvlm shard: no --salt or $DENTVLM_SALT; using a random salt, so pseudonyms will differ "
              "from any other run", file=sys.stderr)
    with _sigterm_as_exit():  # a killed build removes its build folder and its image workers
        build_shards(
            Path(source), Path(out), salt=salt, source_format=source_format, classes=classes, val=val, test=test,
            seed=seed, policy=ImagePolicy(image_long_side, jpeg_quality, max_source_pixels),
            max_count=max_count, max_bytes=max_bytes, strict=strict, workers=workers,
            image_root=Path(image_root) if image_root else None, overwrite=overwrite,
        )


@contextlib.contextmanager
def _sigterm_as_exit():
    """SIGTERM (``kill``, a scheduler's time limit) ends Python without running ``finally`` blocks;
    raising SystemExit instead lets the command clean up after itself."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def tiny(out: str | None = None, seed: int = 0) -> None:
    """Build the embedded tiny Qwen2.5-VL model (random weights, real processor) as a Hugging Face folder.

    Args:
        out: Folder to write (default: the cache folder that model_path "tiny" uses).
        seed: Seed of the weight initialisation (the tokenizer is always trained on the same text).
    """
    from dentvlm.model.tiny import build_tiny_model, ensure_tiny_model

    path = build_tiny_model(Path(out), seed=seed) if out else ensure_tiny_model()
    print(f"dentvlm tiny: model folder {path}", file=sys.stderr)


def export(checkpoint: str, out: str, merge: bool = False, dtype: str = "auto", verify: bool = True,
           max_merge_error: float = 0.05, base_model: str | None = None) -> None:
    """Export a checkpoint as a peft adapter, or merged into the base model, loadable without dentvlm.

    Args:
        checkpoint: A checkpoint file (runs/.../checkpoints/last.ckpt) or its folder (.../last).
        out: New folder to write (appears only once the export is complete and checked).
        merge: Merge the adapter into the base weights (a plain transformers model folder).
        dtype: Dtype of the merged weights: auto (float32: the merge keeps the whole update), float32,
            bfloat16 or float16 (smaller, but 16-bit weights round away much of a small LoRA update).
        verify: Load the export back before reporting success (an adapter loads onto the base model; a
            merged model's logits on a few real prompts are compared with the adapter's).
        max_merge_error: Largest share of the fine-tuning's effect on the logits a merged export may lose
            (||merged - adapter|| / ||adapter - base||); more stops the export.
        base_model: The base model's folder, when it is no longer where the checkpoint recorded it (a
            moved copy is recognised by its config; a different model is refused).
    """
    from dentvlm.export import export_checkpoint

    path = export_checkpoint(checkpoint, out, merge=merge, dtype=dtype, verify=verify, max_merge_error=max_merge_error,
                             base_model=base_model)
    print(f"dentvlm export: wrote {'merged model' if merge else 'adapter'} to {path}", file=sys.stderr)


def serve(checkpoint: str, host: str = "127.0.0.1", port: int = 8000, api_key_env: str | None = "DENTVLM_API_KEY",
          model_name: str | None = None, max_batch_size: int = 8, batch_timeout: float = 0.05,
          max_new_tokens: int = 1024, max_tokens: int | None = None, temperature: float = 0.0, max_images: int = 32,
          max_image_bytes: int = 20_000_000, max_image_pixels: int = 40_000_000,
          max_request_pixels: int = 128_000_000, max_request_bytes: int = 200_000_000, cutoff_len: int = 4096,
          min_pixels: int | None = None, max_pixels: int | None = None, context_len: int | None = None,
          dtype: str = "auto", accelerator: str = "auto", devices: int | str = "auto", workers_per_device: int = 1,
          timeout: float = 300.0, log_level: str = "warning", base_model: str | None = None) -> None:
    """Serve a checkpoint, export or model folder as an OpenAI-compatible chat completions API (LitServe).

    Ctrl+C or SIGTERM (`kill`) stops the server and its worker processes and exits with status 0; a second
    signal during that shutdown stops at once (status 130 or 143).

    Args:
        checkpoint: A checkpoint (runs/.../checkpoints/last.ckpt or its folder), an adapter or merged
            export, or a Hugging Face model folder ("tiny": the tiny base model).
        host: Address to bind: 127.0.0.1 (this machine only), 0.0.0.0 or :: (every interface).
        port: TCP port (1024-65535); clients use base URL http://HOST:PORT/v1.
        api_key_env: Environment variable whose value clients must send as ``Authorization: Bearer``
            on every path, /health and /docs included (unset or empty: no key; else HTTP 401). The key
            is never read from a flag or a config file.
        model_name: The model's name in /v1/models (default: the checkpoint folder's name after its run's,
            e.g. tiny-last for runs/tiny/checkpoints/last.ckpt; else the export or model folder's name).
        max_batch_size: Requests generated together in one batch.
        batch_timeout: Seconds a batch waits to fill before it runs.
        max_new_tokens: Largest max_tokens a request may ask for.
        max_tokens: max_tokens of a request that sets none (default: the training run's model.max_new_tokens).
        temperature: Temperature of a request that sets none (0: greedy, as `dentvlm test`).
        max_images: Images per request (more: HTTP 400).
        max_image_bytes: Bytes per decoded image (more: HTTP 413).
        max_image_pixels: Pixels per image, checked before decoding (more: HTTP 400). Images are prepared as
            the training shards stored theirs (EXIF-rotated, 8-bit, resized to their --image_long_side).
        max_request_pixels: Pixels all images of a request declare together, checked before decoding
            (more: HTTP 400; the default takes 8 photographs of 4000 x 3000).
        max_request_bytes: Bytes per request body, from its Content-Length before it is read, else counted as
            it arrives (more: HTTP 413).
        cutoff_len: Image budget as in data.cutoff_len: a request's images are scaled down together so that
            they and the text fit this many tokens (not below min_pixels).
        min_pixels: Minimum pixels per image (None: the processor's own), as data.min_pixels.
        max_pixels: Maximum pixels per image (None: the processor's own), as data.max_pixels.
        context_len: Longest prompt + answer (None: the model's max_position_embeddings); longer: HTTP 400.
        dtype: Weight dtype: auto (as saved), float32, bfloat16 or float16.
        accelerator: auto, cpu, cuda or mps.
        devices: Devices to serve on (one inference worker each), or auto.
        workers_per_device: Inference workers (model copies) per device.
        timeout: Seconds a request may wait in the queue before HTTP 504.
        log_level: Server log level (info shows every request line).
        base_model: The base model's folder, when it is no longer where the checkpoint recorded it (a
            moved copy; a different model is refused).
    """
    settings = dict(locals())
    from dentvlm.serve.server import serve as run_server

    run_server(**settings)


def predict(checkpoint: str, source: str, out: str, tasks: list[str] | None = None, image_root: str | None = None,
            batch_size: int = 4, max_new_tokens: int | None = None, multi_label: bool | None = None,
            modality: str | None = None, image_modalities: list[str] | None = None, max_images: int | None = None,
            image_long_side: int | None = None, jpeg_quality: int = 90, max_source_pixels: int = 80_000_000,
            device: str = "auto", dtype: str = "auto", strict: bool = False, overwrite: bool = False,
            base_model: str | None = None) -> None:
    """Answer for new checkups (no diagnosis yet): one JSONL line per checkup, keyed by your checkup_id.

    Prompts, classes and image handling follow the checkpoint's training run (its config.yaml and
    labels.json) unless a flag says otherwise; images are prepared as `dentvlm shard` prepares them.

    Args:
        checkpoint: A checkpoint (runs/.../checkpoints/last.ckpt or its folder), or an adapter or merged export.
        source: A folder in the COde layout (complete_dataset.csv without or with an empty anomalies_en,
            + Images/), or a .csv or .jsonl file of checkups (checkup_id, patient text fields,
            photographs, radiographs).
        out: Folder for predictions.jsonl and summary.json (new or empty; it must not hold the source).
        tasks: classification and/or report (default: the task the checkpoint was trained for).
        image_root: Folder that a .csv/.jsonl file's image paths are relative to (default: the file's folder);
            paths that leave it are refused.
        batch_size: Checkups generated together.
        max_new_tokens: Answer length limit (default: the training run's model.max_new_tokens).
        multi_label: Multi-label classification prompt (default: the training run's).
        modality: both, images or text (default: the training run's).
        image_modalities: Image kinds shown, in order (default: the training run's).
        max_images: Images shown per checkup (default: the training run's).
        image_long_side: Images are resized so their longer side is at most this (default: the training
            shards' --image_long_side, else 1024).
        jpeg_quality: JPEG quality images are stored at before the model reads them (as in shards).
        max_source_pixels: Source images declaring more pixels are refused (decompression bombs).
        device: auto (a GPU when there is one), cpu, cuda, cuda:1, ...
        dtype: Weight dtype: auto (as saved), float32, bfloat16 or float16.
        strict: Stop at the first bad row or image instead of skipping and counting it.
        overwrite: Replace the files an earlier `dentvlm predict` wrote to `out` (nothing else in it is touched).
        base_model: The base model's folder, when it is no longer where the checkpoint recorded it (a
            moved copy is recognised by its config; a different model is refused).
    """
    from dentvlm.ingest.images import ImagePolicy
    from dentvlm.predict.run import predict_folder, training_long_side

    long_side = image_long_side or training_long_side(checkpoint) or 1024
    overrides = {"multi_label": multi_label, "modality": modality, "image_modalities": image_modalities,
                 "max_images": max_images}
    summary = predict_folder(checkpoint, source, out, tasks, overrides, image_root,
                             ImagePolicy(long_side, jpeg_quality, max_source_pixels), batch_size, max_new_tokens,
                             device, dtype, strict, overwrite, base_model)
    checkups, images = summary["checkups"], summary["images"]
    skipped = "; ".join(f"{k}: {v}" for k, v in {**checkups["skipped"], **images["skipped"]}.items())
    print(f"dentvlm predict: {checkups['predicted']} of {checkups['read']} checkups predicted, {images['used']} images "
          f"used{'; skipped ' + skipped if skipped else ''}; wrote {out}/predictions.jsonl and summary.json",
          file=sys.stderr)
