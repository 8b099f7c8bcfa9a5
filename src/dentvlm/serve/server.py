"""Build and run the LitServe server of `dentvlm serve`: the gates every request passes before routing
(API key, body size), and a quiet stop on Ctrl+C or SIGTERM."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import multiprocessing
import os
import signal
import sys
import threading
from pathlib import Path

import litserve as ls

from dentvlm.openai_chat import ImageLimits
from dentvlm.serve.api import ModelCard, openai_error, quiet_child
from dentvlm.serve.requests import ServingLimits

HOSTS = ("127.0.0.1", "0.0.0.0", "::")  # what LitServe binds to
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def api_key_digest(env_var: str | None) -> str | None:
    """SHA-256 of the API key in `env_var` (None when unset or empty): the key itself is never kept."""
    key = os.environ.get(env_var, "") if env_var else ""
    return hashlib.sha256(key.encode()).hexdigest() if key else None


class ApiKeyGate:
    """ASGI middleware: every request, whatever its path (chat, models, health, info, the API docs and
    openapi.json, whatever LitServe adds, unknown paths), needs ``Authorization: Bearer <key>`` before it is
    routed or its body read; else HTTP 401 in the OpenAI error shape. Only the key's SHA-256 is kept, and
    digests are compared in constant time."""

    def __init__(self, app, digest: str):
        self.app, self.digest = app, digest

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan" or self.authorized(scope):
            await self.app(scope, receive, send)
        elif scope["type"] == "http":
            response = openai_error(401, "missing or wrong API key (send Authorization: Bearer <key>)",
                                    code="invalid_api_key")
            response.headers["WWW-Authenticate"] = "Bearer"
            await response(scope, receive, send)
        else:  # a websocket handshake: refused
            await send({"type": "websocket.close", "code": 1008})

    def authorized(self, scope) -> bool:
        """Whether the request's Authorization header is ``Bearer <the key>`` (the scheme in any case)."""
        scheme, _, token = dict(scope["headers"]).get(b"authorization", b"").partition(b" ")
        presented = hashlib.sha256(token.strip()).hexdigest()
        return hmac.compare_digest(presented, self.digest) and scheme.lower() == b"bearer"


class BodyLimit:
    """ASGI middleware: a request body over `max_bytes` gets HTTP 413 before anything parses it: at once
    when its Content-Length says so, else (a chunked upload, which has none) as soon as what has arrived
    passes the limit. The body is gathered here and handed on whole, so no more than the limit is held.
    (LitServe's ``max_payload_size`` counts the chunks too, but answers in its own shape.)"""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"0")
        body = None if declared.isdigit() and int(declared) > self.max_bytes else await self.gather(receive)
        if body is None:
            await openai_error(413, f"request body over {self.max_bytes:,} bytes (the server's --max_request_bytes)",
                               code="request_too_large")(scope, receive, send)
            return
        pending = [{"type": "http.request", "body": body, "more_body": False}]

        async def replay():
            return pending.pop() if pending else await receive()

        await self.app(scope, replay, send)

    async def gather(self, receive) -> bytes | None:
        """The whole body, or None once it passes the limit (or the client leaves half-way)."""
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return None
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                return None
            if not message.get("more_body", False):
                return b"".join(chunks)


class DentLitServer(ls.LitServer):
    """LitServe's server, stopping quietly. A terminal's Ctrl+C signals every process of its group: the
    inference workers and the HTTP process would each print a traceback, and LitServe's own shutdown
    would race its worker monitor. Here only the `dentvlm serve` process acts on SIGINT and SIGTERM; it
    stops its children with SIGTERM (see `dentvlm.serve.api.quiet_child` and `stop_on_signals`)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._stop_lock, self._stopping = threading.Lock(), False

    def launch_inference_worker(self, lit_api):
        """Workers are spawned with SIGINT ignored: inherited across exec, it holds from their first instruction
        on, while they import torch and load the model too (`DentChatAPI.setup` then calls `quiet_child`)."""
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            return super().launch_inference_worker(lit_api)
        finally:
            signal.signal(signal.SIGINT, previous)

    def _perform_graceful_shutdown(self, manager, uvicorn_workers, shutdown_reason: str = "normal"):
        """LitServe's shutdown, once. Its worker monitor thread would take the workers this stops for dead
        ones and start a second shutdown beside it ("Worker died"): a set event ends its loop first."""
        with self._stop_lock:
            if self._stopping:
                return
            self._stopping = True
        self._shutdown_event = threading.Event()
        self._shutdown_event.set()
        super()._perform_graceful_shutdown(manager, uvicorn_workers, shutdown_reason)


@contextlib.contextmanager
def stop_on_signals():
    """SIGINT (Ctrl+C) and SIGTERM (`kill`) stop the server alike, unless this process was started with
    them ignored (``cmd &`` in a script ignores Ctrl+C). The first raises KeyboardInterrupt, LitServe's cue
    for its graceful shutdown (after any other exception that shutdown waits forever on the manager
    connection the signal interrupted). A second one, while that shutdown runs, ends the process at once
    with status 128 + signal; its children die with it (`dentvlm.processes`)."""
    handled = [each for each in STOP_SIGNALS if signal.getsignal(each) is not signal.SIG_IGN]

    def stop(signum, frame):
        for each in handled:
            signal.signal(each, stop_now)
        raise KeyboardInterrupt

    def stop_now(signum, frame):
        print("dentvlm serve: stopped at once (second signal)", file=sys.stderr, flush=True)
        os._exit(128 + signum)

    previous = {each: signal.signal(each, stop) for each in handled}
    try:
        yield
    finally:
        for each, handler in previous.items():
            signal.signal(each, handler)


def stop_children(grace: float = 10.0) -> None:
    """Stop the processes LitServe left running: a signal while the workers load comes before its shutdown."""
    children = multiprocessing.active_children()
    for child in children:
        child.terminate()
    for child in children:
        child.join(grace)
        if child.is_alive():
            child.kill()
            child.join()


def default_model_name(checkpoint: str) -> str:
    """The name ``/v1/models`` lists by default: the checkpoint folder's, after its run's when it is one of a
    run's checkpoints (runs/tiny/checkpoints/last: tiny-last); else the export or model folder's."""
    from dentvlm.inference.load import model_folder

    folder = model_folder(checkpoint).resolve()
    return f"{folder.parent.parent.name}-{folder.name}" if folder.parent.name == "checkpoints" else folder.name


def build_server(model_path: str, limits: ServingLimits, api_key_env: str | None = None, dtype: str = "auto",
                 cutoff_len: int = 4096, min_pixels: int | None = None, max_pixels: int | None = None,
                 context_len: int | None = None, max_batch_size: int = 8, batch_timeout: float = 0.05,
                 accelerator: str = "auto", devices: int | str = "auto", workers_per_device: int = 1,
                 timeout: float = 300.0, max_request_bytes: int = 200_000_000,
                 model_name: str | None = None, base_model: str | None = None) -> DentLitServer:
    """A LitServer for `model_path` (see `dentvlm.inference.load.model_folder`); run it with
    ``.run(host, port)``. The request checks load the processor here, before any worker starts."""
    from dentvlm.inference.load import model_folder
    from dentvlm.serve.api import DentChatAPI, ReaderFactory

    folder = model_folder(model_path)
    factory = ReaderFactory(str(folder), limits, cutoff_len, min_pixels, max_pixels, context_len, base_model)
    card = ModelCard(model_name or default_model_name(model_path), int(Path(folder).stat().st_mtime))
    api = DentChatAPI(model_path, factory, card, dtype, max_batch_size, batch_timeout, base_model)
    api.spec._reader = factory()  # fails now, with one line, on a folder without a usable processor
    digest = api_key_digest(api_key_env)
    gates = [(BodyLimit, {"max_bytes": max_request_bytes})] + ([(ApiKeyGate, {"digest": digest})] if digest else [])
    return DentLitServer(api, accelerator=accelerator, devices=devices, workers_per_device=workers_per_device,
                         timeout=timeout, middlewares=gates)


def serve(checkpoint: str, host: str = "127.0.0.1", port: int = 8000, api_key_env: str | None = "DENTVLM_API_KEY",
          model_name: str | None = None, max_batch_size: int = 8, batch_timeout: float = 0.05,
          max_new_tokens: int = 1024, max_tokens: int | None = None, temperature: float = 0.0, max_images: int = 32,
          max_image_bytes: int = 20_000_000, max_image_pixels: int = 40_000_000,
          max_request_pixels: int = 128_000_000, max_request_bytes: int = 200_000_000, cutoff_len: int = 4096,
          min_pixels: int | None = None, max_pixels: int | None = None, context_len: int | None = None,
          dtype: str = "auto", accelerator: str = "auto", devices: int | str = "auto", workers_per_device: int = 1,
          timeout: float = 300.0, log_level: str = "warning", base_model: str | None = None) -> None:
    """See `dentvlm.commands.serve` (the CLI) for the arguments. Returns once stopped by SIGINT or SIGTERM."""
    if host not in HOSTS:
        raise ValueError(f"--host {host!r}: choose 127.0.0.1 (this machine only), 0.0.0.0 or :: (every interface)")
    if not 1024 <= port <= 65535:
        raise ValueError(f"--port {port}: choose a port from 1024 to 65535")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # the HTTP process is forked after tokenizing
    from dentvlm.checkpointing import DESCRIPTION
    from dentvlm.inference.load import model_folder, read_json
    from dentvlm.predict.run import training_long_side
    from dentvlm.processes import children_die_with_this_process

    digest = api_key_digest(api_key_env)
    if max_tokens is None:  # the training run's generation limit
        hparams = read_json(model_folder(checkpoint) / DESCRIPTION).get("model_hparams", {})
        max_tokens = int(hparams.get("max_new_tokens") or 128)
    # Requests' images are prepared as the training shards stored theirs (at their long side, else 1024).
    images = ImageLimits(max_images, max_image_bytes, max_image_pixels, max_request_pixels,
                         long_side=training_long_side(checkpoint) or 1024)
    limits = ServingLimits(images, max_new_tokens, min(max_tokens, max_new_tokens), temperature)
    children_die_with_this_process()
    os.register_at_fork(after_in_child=quiet_child)
    with stop_on_signals():
        try:
            server = build_server(checkpoint, limits, api_key_env, dtype, cutoff_len, min_pixels, max_pixels,
                                  context_len, max_batch_size, batch_timeout, accelerator, devices,
                                  workers_per_device, timeout, max_request_bytes, model_name, base_model)
            announce(checkpoint, host, port, server.lit_api.spec.model.name, api_key_env if digest else None,
                     max_batch_size)
            server.run(host=host, port=port, num_api_servers=1, log_level=log_level, generate_client_file=False)
        except KeyboardInterrupt:
            pass
        finally:
            stop_children()
    print("dentvlm serve: stopped", file=sys.stderr, flush=True)


def announce(checkpoint: str, host: str, port: int, name: str, key_env: str | None, max_batch_size: int) -> None:
    """The lines `dentvlm serve` prints once the model's processor is loaded."""
    shown = "[::1]" if host == "::" else host
    print(f"dentvlm serve: {checkpoint} as {name!r} at http://{shown}:{port}/v1 (OpenAI chat completions; "
          f"{'API key from $' + key_env if key_env else 'no API key'}; batches of up to {max_batch_size})",
          file=sys.stderr, flush=True)
    if host != "127.0.0.1":
        print(f"dentvlm serve: listening on every network interface ({host}){'' if key_env else ' without an API key'}",
              file=sys.stderr, flush=True)
