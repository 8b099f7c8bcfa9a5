"""One chat completion request, checked and turned into what the model reads.

The same `RequestReader` runs twice: in the HTTP process, to answer a bad request with a 4xx at once
(LitServe batches requests, and an error inside a batch fails every request in it), and in the
inference worker, to encode the request exactly as `dentvlm test` encodes an evaluation sample.

A request is refused from its cheapest facts first: its settings, then the length of its text (which
bounds its tokens from below, so an over-long prompt is never tokenised), then its images' headers,
and only then are images decoded and the prompt tokenised.
"""

from __future__ import annotations

import copy
import functools
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
# Unicode NFC, the normaliser of Qwen's tokenizers, joins at most 4 code points into one character
# (U+1F82 = U+03B1 U+0313 U+0300 U+0345): text can shrink that much before it is cut into tokens.
NORMALISER_SHRINK = 4


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


def _field(value: Any, name: str) -> Any:
    """`value[name]` of a dict, `value.name` of a pydantic model; None when absent."""
    return value.get(name) if isinstance(value, dict) else getattr(value, name, None)


def text_characters(messages: list[Any]) -> int:
    """Characters of the text of `messages` (dicts or pydantic models): string contents and text parts;
    anything else is left to `from_openai_messages` to refuse."""
    total = 0
    for message in messages:
        content = _field(message, "content")
        parts = [content] if isinstance(content, str) else content if isinstance(content, list) else []
        for part in parts:
            text = part if isinstance(part, str) else _field(part, "text")
            total += len(text) if isinstance(text, str) else 0
    return total


def characters_per_token(tokenizer) -> int:
    """The most characters of a text that one token of `tokenizer` can stand for: its longest vocabulary
    entry (added tokens such as ``<|vision_start|>`` included), times what a normaliser can shrink text by.
    A byte-level token's entry has one character per byte, so it is never shorter than the text it decodes to.
    A normaliser that deletes text would break this bound; Qwen-VL tokenizers have none (NFC or nothing)."""
    longest = max(len(token) for token in tokenizer.get_vocab())
    normaliser = getattr(getattr(tokenizer, "backend_tokenizer", None), "normalizer", None)
    return longest * (NORMALISER_SHRINK if normaliser is not None else 1)


class RequestReader:
    """Checks requests and encodes them with the served model's processor and image budget.

    Requests are checked in several threads at once. Hugging Face fast tokenizers must not be shared
    between threads, and a lock around one shared copy would let one long request stall every other
    one, so each thread tokenises with its own copy of the encoder (made on first use: milliseconds).
    """

    def __init__(self, encoder: ChatEncoder, limits: ServingLimits):
        self.encoder, self.limits = encoder, limits
        self._local = threading.local()

    def thread_encoder(self) -> ChatEncoder:
        """This thread's copy of the encoder."""
        if not hasattr(self._local, "encoder"):
            self._local.encoder = copy.deepcopy(self.encoder)
        return self._local.encoder

    @functools.cached_property
    def characters_per_token(self) -> int:
        """See `characters_per_token`; computed once (a pass over the vocabulary)."""
        return characters_per_token(self.encoder.processor.tokenizer)

    def check_text_length(self, request: Any, decoding: Decoding) -> None:
        """Refuse, without tokenising it, a prompt whose text alone needs more tokens than the context leaves
        beside max_tokens: each token stands for at most `characters_per_token` characters."""
        room = self.encoder.context_len - decoding.max_new_tokens
        if room <= 0:
            raise BadChatRequest(f"max_tokens {decoding.max_new_tokens} leaves no room for a prompt in the model's "
                                 f"context of {self.encoder.context_len} tokens")
        characters = text_characters(request.messages or [])
        if characters > room * self.characters_per_token:
            raise BadChatRequest(f"the prompt's {characters:,} characters take more than {room:,} tokens (a token "
                                 f"is at most {self.characters_per_token} characters); with max_tokens "
                                 f"{decoding.max_new_tokens} that passes the model's context of "
                                 f"{self.encoder.context_len} tokens")

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
        self.check_text_length(request, decoding)
        example = self.example(request)
        _, tokens = self.thread_encoder().sized(example)
        if tokens + decoding.max_new_tokens > self.encoder.context_len:
            raise BadChatRequest(f"the prompt takes {tokens} tokens (images included); with "
                                 f"max_tokens {decoding.max_new_tokens} that passes the model's context of "
                                 f"{self.encoder.context_len} tokens")

    def encode(self, request: Any) -> tuple[Encoded, Decoding]:
        """What the model reads for `request`, and how to decode."""
        decoding = self.decoding(request)
        self.check_text_length(request, decoding)
        try:
            return self.thread_encoder().encode(self.example(request), training=False), decoding
        except Overlong as exc:
            raise BadChatRequest(str(exc)) from None
