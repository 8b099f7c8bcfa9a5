"""The LitServe API of `dentvlm serve`: OpenAI chat completions for one dentvlm model.

LitServe (Lightning's serving library) brings what a hand-written server would have to get right:
the OpenAI request/response schema (`OpenAISpec`), request batching with a time window, inference in
worker processes (one per device), health and info endpoints, and graceful shutdown.
"""

import asyncio
import hashlib
import hmac
import os
from itertools import groupby

import litserve as ls
from fastapi import BackgroundTasks, Header, HTTPException
from fastapi.responses import JSONResponse
from litserve.specs.openai import ChatCompletionRequest, OpenAISpec
from pydantic import ConfigDict

from dentvlm.openai_chat import BadChatRequest
from dentvlm.serve.requests import RequestReader, ServingLimits


class DentChatRequest(ChatCompletionRequest):
    """LitServe's request model, keeping the fields it does not declare (``logit_bias``, ``seed``,
    ``logprobs`` ...) so that the reader refuses them instead of pydantic dropping them unseen."""

    model_config = ConfigDict(extra="allow")


class CheckedOpenAISpec(OpenAISpec):
    """LitServe's OpenAI spec, answering bad requests with a 4xx before they are queued: in a batch,
    one request's error would fail the whole batch."""

    def __init__(self, reader_factory):
        super().__init__()
        self.reader_factory = reader_factory
        self._reader: RequestReader | None = None

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
        except BadChatRequest as exc:  # the OpenAI API's error shape, which its clients show
            return JSONResponse(status_code=exc.status, content={"error": {
                "message": str(exc), "type": "invalid_request_error", "param": None, "code": None}})
        return await super().chat_completion(request, background_tasks)


class ReaderFactory:
    """Picklable: builds the `RequestReader` of a served model (processor + image budget + limits)."""

    def __init__(self, model_folder: str, limits: ServingLimits, cutoff_len: int, min_pixels: int | None,
                 max_pixels: int | None, context_len: int | None):
        self.model_folder, self.limits, self.cutoff_len = model_folder, limits, cutoff_len
        self.min_pixels, self.max_pixels, self.context_len = min_pixels, max_pixels, context_len

    def __call__(self, processor=None) -> RequestReader:
        from pathlib import Path

        from dentvlm.data.collate import ChatEncoder
        from dentvlm.inference.load import context_length, folder_processor

        folder = Path(self.model_folder)
        processor = processor or folder_processor(folder)
        context_len = self.context_len or context_length(folder)
        encoder = ChatEncoder(processor, self.cutoff_len, "error", self.min_pixels, self.max_pixels,
                              context_len=context_len)
        return RequestReader(encoder, self.limits)


class DentChatAPI(ls.LitAPI):
    """Chat completions from a dentvlm checkpoint or model folder, batched.

    Args:
        model_path: What `dentvlm.inference.load.load_for_inference` loads.
        reader_factory: Builds the request reader (see `ReaderFactory`).
        api_key_digest: SHA-256 of the API key clients must send as ``Authorization: Bearer``; None: open.
        dtype: Weight dtype.
        max_batch_size: Requests generated together.
        batch_timeout: Seconds to wait for a batch to fill.
    """

    def __init__(self, model_path: str, reader_factory: ReaderFactory, api_key_digest: str | None,
                 dtype: str = "auto", max_batch_size: int = 8, batch_timeout: float = 0.05):
        super().__init__(max_batch_size=max_batch_size, batch_timeout=batch_timeout,
                         spec=CheckedOpenAISpec(reader_factory))
        self.model_path, self.dtype, self.api_key_digest = model_path, dtype, api_key_digest
        self.reader_factory = reader_factory

    def setup(self, device) -> None:
        from dentvlm.inference.load import load_for_inference
        from dentvlm.processes import die_with_parent

        die_with_parent()  # a killed `dentvlm serve` takes its inference workers along
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        self.model = load_for_inference(self.model_path, self.dtype, device=device)
        self.reader = self.reader_factory(self.model.processor)

    def authorize(self, authorization: str | None = Header(default=None)) -> None:
        """FastAPI dependency of every chat request: the Bearer key, when the server has one."""
        if self.api_key_digest is None:
            return
        token = (authorization or "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(hashlib.sha256(token.encode()).hexdigest(), self.api_key_digest):
            raise HTTPException(status_code=401, detail="missing or wrong API key (Authorization: Bearer <key>)")

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
            for index, answer in zip(indices, generate(self.model.network, self.model.processor, encoded,
                                                        items[indices[0]][1], self.reader.encoder.pad_id)):
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
