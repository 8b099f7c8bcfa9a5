"""Build and run the LitServe server of `dentvlm serve`."""

from __future__ import annotations

import hashlib
import os
import sys

from dentvlm.openai_chat import ImageLimits
from dentvlm.serve.requests import ServingLimits

HOSTS = ("127.0.0.1", "0.0.0.0", "::")  # what LitServe binds to


def api_key_digest(env_var: str | None) -> str | None:
    """SHA-256 of the API key in `env_var` (None when unset or empty): the key itself is never kept."""
    key = os.environ.get(env_var, "") if env_var else ""
    return hashlib.sha256(key.encode()).hexdigest() if key else None


def build_server(model_path: str, limits: ServingLimits, api_key_env: str | None = None, dtype: str = "auto",
                 cutoff_len: int = 4096, min_pixels: int | None = None, max_pixels: int | None = None,
                 context_len: int | None = None, max_batch_size: int = 8, batch_timeout: float = 0.05,
                 accelerator: str = "auto", devices: int | str = "auto", workers_per_device: int = 1,
                 timeout: float = 300.0, max_request_bytes: int = 200_000_000):
    """A `litserve.LitServer` for `model_path` (see `dentvlm.inference.load.model_folder`); run it with
    ``.run(host, port)``. The request checks load the processor here, before any worker starts."""
    import litserve as ls

    from dentvlm.inference.load import model_folder
    from dentvlm.serve.api import DentChatAPI, ReaderFactory

    folder = model_folder(model_path)
    factory = ReaderFactory(str(folder), limits, cutoff_len, min_pixels, max_pixels, context_len)
    api = DentChatAPI(model_path, factory, api_key_digest(api_key_env), dtype, max_batch_size, batch_timeout)
    api.spec._reader = factory()  # fails now, with one line, on a folder without a usable processor
    return ls.LitServer(api, accelerator=accelerator, devices=devices, workers_per_device=workers_per_device,
                        timeout=timeout, max_payload_size=max_request_bytes)


def serve(checkpoint: str, host: str = "127.0.0.1", port: int = 8000, api_key_env: str | None = "DENTVLM_API_KEY",
          max_batch_size: int = 8, batch_timeout: float = 0.05, max_new_tokens: int = 1024,
          max_tokens: int | None = None, temperature: float = 0.0, max_images: int = 32,
          max_image_bytes: int = 20_000_000, max_image_pixels: int = 40_000_000,
          max_request_pixels: int = 128_000_000, max_request_bytes: int = 200_000_000, cutoff_len: int = 4096,
          min_pixels: int | None = None, max_pixels: int | None = None, context_len: int | None = None,
          dtype: str = "auto", accelerator: str = "auto", devices: int | str = "auto", workers_per_device: int = 1,
          timeout: float = 300.0, log_level: str = "warning") -> None:
    """See `dentvlm.commands.serve` (the CLI) for the arguments."""
    if host not in HOSTS:
        raise ValueError(f"--host {host!r}: choose 127.0.0.1 (this machine only), 0.0.0.0 or :: (every interface)")
    if not 1024 <= port <= 65535:
        raise ValueError(f"--port {port}: choose a port from 1024 to 65535")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # the HTTP process is forked after tokenizing
    from dentvlm.checkpointing import DESCRIPTION
    from dentvlm.inference.load import model_folder, read_json
    from dentvlm.predict.run import training_long_side

    digest = api_key_digest(api_key_env)
    if max_tokens is None:  # the training run's generation limit
        hparams = read_json(model_folder(checkpoint) / DESCRIPTION).get("model_hparams", {})
        max_tokens = int(hparams.get("max_new_tokens") or 128)
    # Requests' images are prepared as the training shards stored theirs (at their long side, else 1024).
    images = ImageLimits(max_images, max_image_bytes, max_image_pixels, max_request_pixels,
                         long_side=training_long_side(checkpoint) or 1024)
    limits = ServingLimits(images, max_new_tokens, min(max_tokens, max_new_tokens), temperature)
    server = build_server(checkpoint, limits, api_key_env, dtype, cutoff_len, min_pixels, max_pixels, context_len,
                          max_batch_size, batch_timeout, accelerator, devices, workers_per_device, timeout,
                          max_request_bytes)
    shown = "[::1]" if host == "::" else host
    print(f"dentvlm serve: {checkpoint} at http://{shown}:{port}/v1 (OpenAI chat completions; "
          f"{'API key from $' + api_key_env if digest else 'no API key'}; batches of up to {max_batch_size})",
          file=sys.stderr, flush=True)
    if host != "127.0.0.1":
        print(f"dentvlm serve: listening on every network interface ({host}){'' if digest else ' without an API key'}",
              file=sys.stderr, flush=True)
    server.run(host=host, port=port, num_api_servers=1, log_level=log_level, generate_client_file=False)

