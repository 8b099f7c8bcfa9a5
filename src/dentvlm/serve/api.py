"""The LitServe API of `dentvlm serve`: OpenAI chat completions and model listing for one dentvlm model.

LitServe (Lightning's serving library) brings what a hand-written server would have to get right:
the OpenAI request/response schema (`OpenAISpec`), request batching with a time window, inference in
worker processes (one per device), health and info endpoints, and graceful shutdown.
"""

import asyncio
import os
import signal
from dataclasses import dataclass
from itertools import groupby

import litserve as ls
from fastapi import BackgroundTasks, HTTPException
from fastapi.responses import JSONResponse
from litserve.specs.openai import ChatCompletionRequest, OpenAISpec
from pydantic import ConfigDict

from dentvlm.openai_chat import BadChatRequest
from dentvlm.serve.requests import RequestReader, ServingLimits


def quiet_child() -> None:
    """In each child process of `dentvlm serve` (inference workers, the HTTP server, LitServe's manager):
    Ctrl+C, which a terminal sends to every process of its group, is the parent's to act on; SIGTERM, the
    parent's stop, exits through Python (its finalisers run, e.g. tqdm's semaphore is released) but without
    the traceback of a KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _exit_quietly)


def _exit_quietly(signum, frame):
    """SIGTERM handler: SystemExit unwinds like a normal exit, and multiprocessing prints no traceback for it."""
    raise SystemExit(0)


def openai_error(status: int, message: str, code: str | None = None, param: str | None = None) -> JSONResponse:
    """An error response in the OpenAI API's shape, which its clients show to their users."""
    return JSONResponse(status_code=status, content={"error": {
        "message": message, "type": "invalid_request_error", "param": param, "code": code}})


@dataclass(frozen=True)
class ModelCard:
    """The served model as ``GET /v1/models`` lists it (OpenAI clients and tools list models first)."""

    name: str = "dentvlm"
    created: int = 0  # Unix time the checkpoint or model folder was written

    def as_openai(self) -> dict:
        """The model object of the OpenAI API."""
        return {"id": self.name, "object": "model", "created": self.created, "owned_by": "dentvlm"}


class DentChatRequest(ChatCompletionRequest):
    """LitServe's request model, keeping the fields it does not declare (``logit_bias``, ``seed``,
    ``logprobs`` ...) so that the reader refuses them instead of pydantic dropping them unseen."""

    model_config = ConfigDict(extra="allow")


class CheckedOpenAISpec(OpenAISpec):
    """LitServe's OpenAI spec, answering bad requests with a 4xx before they are queued (in a batch, one
    request's error would fail the whole batch), and listing the served model."""

    def __init__(self, reader_factory, model: ModelCard | None = None):
        super().__init__()
        self.reader_factory, self.model = reader_factory, model or ModelCard()
        self._reader: RequestReader | None = None
        self.add_endpoint("/v1/models", self.list_models, ["GET"])
        self.add_endpoint("/v1/models/{model_id:path}", self.retrieve_model, ["GET"])

    def __getstate__(self):
        state = super().__getstate__()
        state["_reader"] = None  # the worker processes build their own (the processor is not sent)
        return state

    @property
    def reader(self) -> RequestReader:
        if self._reader is None:
            self._reader = self.reader_factory()
        return self._reader

    async def chat_completion(self, request: DentChatRequest, background_tasks: BackgroundTasks):
        try:  # decoding images and counting tokens: off the event loop
            await asyncio.to_thread(self.reader.check, request)
        except BadChatRequest as exc:
            return openai_error(exc.status, str(exc))
        return await super().chat_completion(request, background_tasks)

    async def list_models(self) -> JSONResponse:
        """``GET /v1/models``: the one served model."""
        return JSONResponse({"object": "list", "data": [self.model.as_openai()]})

    async def retrieve_model(self, model_id: str) -> JSONResponse:
        """``GET /v1/models/{id}``: the served model, or the OpenAI API's 404 for any other name."""
        if model_id != self.model.name:
            return openai_error(404, f"The model {model_id!r} does not exist (this server serves "
                                     f"{self.model.name!r})", code="model_not_found", param="model")
        return JSONResponse(self.model.as_openai())


class ReaderFactory:
    """Picklable: builds the `RequestReader` of a served model (processor + image budget + limits)."""

    def __init__(self, model_folder: str, limits: ServingLimits, cutoff_len: int, min_pixels: int | None,
                 max_pixels: int | None, context_len: int | None, base_model: str | None = None):
        self.model_folder, self.limits, self.cutoff_len = model_folder, limits, cutoff_len
        self.min_pixels, self.max_pixels, self.context_len = min_pixels, max_pixels, context_len
        self.base_model = base_model

    def __call__(self, processor=None) -> RequestReader:
        from pathlib import Path

        from dentvlm.data.collate import ChatEncoder
        from dentvlm.inference.load import context_length, folder_processor

        folder = Path(self.model_folder)
        processor = processor or folder_processor(folder)
        context_len = self.context_len or context_length(folder, self.base_model)
        encoder = ChatEncoder(processor, self.cutoff_len, "error", self.min_pixels, self.max_pixels,
                              context_len=context_len)
        return RequestReader(encoder, self.limits)


class DentChatAPI(ls.LitAPI):
    """Chat completions from a dentvlm checkpoint or model folder, batched.

    Args:
        model_path: What `dentvlm.inference.load.load_for_inference` loads.
        reader_factory: Builds the request reader (see `ReaderFactory`).
        model: The name and date ``/v1/models`` lists.
        dtype: Weight dtype.
        max_batch_size: Requests generated together.
        batch_timeout: Seconds to wait for a batch to fill.
        base_model: An adapter's base model folder when it moved (see `dentvlm.base_model`).
    """

    def __init__(self, model_path: str, reader_factory: ReaderFactory, model: ModelCard | None = None,
                 dtype: str = "auto", max_batch_size: int = 8, batch_timeout: float = 0.05,
                 base_model: str | None = None):
        super().__init__(max_batch_size=max_batch_size, batch_timeout=batch_timeout,
                         spec=CheckedOpenAISpec(reader_factory, model))
        self.model_path, self.dtype, self.reader_factory = model_path, dtype, reader_factory
        self.base_model = base_model

    def setup(self, device) -> None:
        from dentvlm.inference.load import load_for_inference
        from dentvlm.processes import die_with_parent

        die_with_parent()  # a killed `dentvlm serve` takes its inference workers along
        quiet_child()
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        self.model = load_for_inference(self.model_path, self.dtype, device=device, base_model=self.base_model)
        self.reader = self.reader_factory(self.model.processor)

    def authorize(self) -> None:
        """Nothing per route: `dentvlm.serve.server.ApiKeyGate` checks the key of every path before routing.
        Defined so that LitServe does not put its own X-API-Key scheme (``LIT_SERVER_API_KEY``) on some routes."""

    def decode_request(self, request, **kwargs):
        try:
            return self.reader.encode(request)
        except BadChatRequest as exc:  # checked before queuing; reaching here is a server-side bug
            raise HTTPException(status_code=exc.status, detail=str(exc)) from None

    def predict(self, inputs, **kwargs):
        """One answer per request; requests with equal decoding settings are generated as one batch."""
        from dentvlm.inference.generate import generate

        single = not isinstance(inputs, list)
        items = [inputs] if single else inputs
        answers: list = [None] * len(items)
        order = sorted(range(len(items)), key=lambda i: repr(items[i][1]))
        for _, group in groupby(order, key=lambda i: repr(items[i][1])):
            indices = list(group)
            encoded = [items[i][0] for i in indices]
            answers_of_group = generate(self.model.network, self.model.processor, encoded, items[indices[0]][1],
                                        self.reader.encoder.pad_id, autocast=self.model.autocast)
            for index, answer in zip(indices, answers_of_group):
                answers[index] = {"role": "assistant", "content": answer.text, "prompt_tokens": answer.prompt_tokens,
                                  "completion_tokens": answer.completion_tokens,
                                  "total_tokens": answer.prompt_tokens + answer.completion_tokens}
        yield answers[0] if single else answers

    def encode_response(self, outputs, **kwargs):
        for output in outputs:
            if isinstance(output, list):
                yield [self._spec._encode_response(o) for o in output]
            else:
                yield self._spec._encode_response(output)
