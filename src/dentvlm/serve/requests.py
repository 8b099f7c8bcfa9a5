"""One chat completion request, checked and turned into what the model reads.

The same `RequestReader` runs twice: in the HTTP process, to answer a bad request with a 4xx at once
(LitServe batches requests, and an error inside a batch fails every request in it), and in the
inference worker, to encode the request exactly as `dentvlm test` encodes an evaluation sample.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Any

from dentvlm.data.collate import ChatEncoder, Encoded, Overlong
from dentvlm.data.tasks import Example
from dentvlm.inference.generate import Decoding
from dentvlm.openai_chat import BadChatRequest, ImageLimits, from_openai_messages

# The request fields this server honours (`model`: any name, one model is served; `response_format`: text
# only). Any other field set to something but its default (tools, stop, penalties, logit_bias, seed,
# logprobs, user, ...) is refused rather than silently ignored: the answer would not be what was asked for.
HONOURED = ("model", "messages", "temperature", "top_p", "n", "max_tokens", "max_completion_tokens", "stream",
            "response_format")
UNSET = (None, False, "", [], {})


@dataclass(frozen=True)
class ServingLimits:
    """Per-request bounds and defaults.

    Attributes:
        images: Bounds on each request's images, and the shard image policy they are prepared with.
        max_new_tokens: Largest max_tokens a request may ask for.
        default_max_tokens: max_tokens of a request that sets none.
        default_temperature: Temperature of a request that sets none (0: greedy).
        max_choices: Largest n.
    """

    images: ImageLimits = ImageLimits()
    max_new_tokens: int = 1024
    default_max_tokens: int = 128
    default_temperature: float = 0.0
    max_choices: int = 8


def unhonoured_fields(request: Any) -> list[str]:
    """Fields of `request` (a pydantic model; unknown fields kept as its extras) that are set to something
    other than their default and not in `HONOURED`."""
    declared, extra = type(request).model_fields, request.model_extra or {}
    unhonoured = []
    for name in (set(request.model_fields_set) | set(extra)) - set(HONOURED):
        if name in extra:
            value, default = extra[name], None
        else:
            value, default = getattr(request, name), declared[name].default
        if not _is_default(value, default):
            unhonoured.append(name)
    return sorted(unhonoured)


def _is_default(value: Any, default: Any) -> bool:
    """Whether `value` asks for nothing: the field's default, null, false or empty (0 is a value: a seed)."""
    return value == default or any(value == unset and type(value) is type(unset) for unset in UNSET)


def _first_set(*values):
    """The first value that is not None (a field sent as null, or not sent, takes the next)."""
    return next(value for value in values if value is not None)


class RequestReader:
    """Checks requests and encodes them with the served model's processor and image budget."""

    def __init__(self, encoder: ChatEncoder, limits: ServingLimits):
        self.encoder, self.limits = encoder, limits
        # Checks run in several threads; Hugging Face fast tokenizers must not be shared between them.
        self.tokenizer_lock = threading.Lock()

    def decoding(self, request: Any) -> Decoding:
        """The request's decoding settings (OpenAI semantics: temperature 0 is greedy; a field sent as
        null takes its default)."""
        unhonoured = unhonoured_fields(request)
        if unhonoured:
            raise BadChatRequest(f"not supported by this server: {', '.join(unhonoured)} (it honours "
                                 f"{', '.join(HONOURED)})")
        format_type = getattr(request.response_format, "type", "text") if request.response_format else "text"
        if format_type != "text":
            raise BadChatRequest(f"response_format {format_type!r} is not supported (text only)")
        n = 1 if request.n is None else request.n
        if not 1 <= n <= self.limits.max_choices:
            raise BadChatRequest(f"n {n} is outside 1..{self.limits.max_choices}")
        tokens = _first_set(request.max_completion_tokens, request.max_tokens, self.limits.default_max_tokens)
        if not 1 <= tokens <= self.limits.max_new_tokens:
            raise BadChatRequest(f"max_tokens {tokens} is outside 1..{self.limits.max_new_tokens} (the server's "
                                 "--max_new_tokens)")
        sent = request.temperature if "temperature" in request.model_fields_set else None
        temperature = _first_set(sent, self.limits.default_temperature)
        top_p = _first_set(request.top_p, 1.0)
        if not (math.isfinite(temperature) and temperature >= 0 and 0 < top_p <= 1):
            raise BadChatRequest("temperature must be >= 0 and top_p in (0, 1]")
        return Decoding(max_new_tokens=tokens, temperature=temperature, top_p=top_p)

    def example(self, request: Any) -> Example:
        """The request as an evaluation example: its turns, then an empty answer to generate."""
        if not request.messages:
            raise BadChatRequest("messages is empty")
        turns, images = from_openai_messages(request.messages, self.limits.images)
        if turns[-1]["role"] == "assistant":
            raise BadChatRequest("the last message is the assistant's: nothing to answer")
        turns.append({"role": "assistant", "content": [{"type": "text", "text": ""}]})
        return Example(key="request", task="chat", messages=turns, images=images, target="")

    def check(self, request: Any) -> None:
        """Raise `BadChatRequest` for a request that must not reach a batch."""
        decoding = self.decoding(request)
        example = self.example(request)
        with self.tokenizer_lock:
            _, tokens = self.encoder.sized(example)
        if tokens + decoding.max_new_tokens > self.encoder.context_len:
            raise BadChatRequest(f"the prompt takes {tokens} tokens (images included); with "
                                 f"max_tokens {decoding.max_new_tokens} that passes the model's context of "
                                 f"{self.encoder.context_len} tokens")

    def encode(self, request: Any) -> tuple[Encoded, Decoding]:
        """What the model reads for `request`, and how to decode."""
        decoding = self.decoding(request)
        try:
            return self.encoder.encode(self.example(request), training=False), decoding
        except Overlong as exc:
            raise BadChatRequest(str(exc)) from None
