"""One chat completion at a time against an OpenAI-compatible API, as real runs need it: retries with
exponential backoff (and the server's Retry-After) on 429, 408, 5xx, timeouts and lost connections;
answers cached on disk by request; token usage and retries counted for the results.

Errors that retrying cannot fix stop the run at once (a rejected key, an unknown model); a request the
API refuses (HTTP 400/413/422, e.g. a content filter) becomes an empty, counted answer.
"""

from __future__ import annotations

import email.utils
import random
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from dentvlm.endpoint.cache import ResponseCache, request_key
from dentvlm.endpoint.logprobs import TokenChoice
from dentvlm.endpoint.settings import EndpointSettings, is_local_host, safe_url

MAX_WAIT = 60.0
TOP_LOGPROBS = 20  # the most OpenAI's API returns per token
RETRY_STATUS = (408, 409, 429)
REFUSED_STATUS = (400, 413, 422)


class EndpointError(ValueError):
    """The endpoint cannot be evaluated (one line, naming the setting or the server's answer)."""


@dataclass
class Completion:
    """One answer: its text, tokens, and whether it came from the cache or was refused."""

    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached: bool = False
    refused: str | None = None
    tokens: list[TokenChoice] | None = None  # each answer token with its top alternatives, when the API gave them


@dataclass
class Usage:
    """Totals over a run (thread-safe updates)."""

    requests: int = 0
    cached: int = 0
    retries: int = 0
    refused: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_prompt_tokens: int = 0
    cached_completion_tokens: int = 0
    refusals: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, completion: Completion, retries: int) -> None:
        with self.lock:
            self.requests += 1
            self.retries += retries
            if completion.cached:
                self.cached += 1
                self.cached_prompt_tokens += completion.prompt_tokens
                self.cached_completion_tokens += completion.completion_tokens
            else:
                self.prompt_tokens += completion.prompt_tokens
                self.completion_tokens += completion.completion_tokens
            if completion.refused:
                self.refused += 1
                self.refusals.append(completion.refused)


class EndpointClient:
    """Asks `settings.base_url` for chat completions (thread-safe: one client serves every worker thread)."""

    def __init__(self, settings: EndpointSettings, cache: ResponseCache, max_tokens: int, seed: int = 0):
        from openai import DefaultHttpxClient, OpenAI

        self.settings, self.cache, self.max_tokens = settings, cache, max_tokens
        self.url = safe_url(settings.base_url)
        # Redirects are never followed: a local server answering 307 to another host would otherwise
        # receive every image past the local-only rule. For a local host, no proxy from the environment
        # either (HTTP(S)_PROXY would carry "local" requests off the machine).
        local = is_local_host(urlsplit(settings.base_url).hostname or "")
        http = DefaultHttpxClient(follow_redirects=False, trust_env=not local)
        # Retries are ours (counted, with the configured backoff), not the client library's.
        self.client = OpenAI(base_url=settings.base_url, api_key=settings.api_key(), max_retries=0,
                             timeout=settings.timeout, http_client=http)
        self.usage = Usage()
        self.random = random.Random(seed)
        self.logprobs = settings.logprobs  # off once the server refuses them

    def body(self, messages: list[dict]) -> dict:
        """The request body (without the key) for `messages`."""
        body = {"model": self.settings.model, "messages": messages, "temperature": self.settings.temperature,
                self.settings.token_limit_param: self.max_tokens}
        if self.logprobs:
            body.update(logprobs=True, top_logprobs=TOP_LOGPROBS)
        return body

    def complete(self, messages: list[dict]) -> Completion:
        """The answer to `messages`: from the cache, else from the API (then cached).

        Raises:
            EndpointError: authentication, permission or an unknown model/URL; retries exhausted; too many
                refused requests.
        """
        body = self.body(messages)
        key = request_key(self.url, body)
        stored = self.cache.get(key)
        if stored is not None:
            completion = Completion(stored["text"], int(stored.get("prompt_tokens", 0)),
                                    int(stored.get("completion_tokens", 0)), cached=True,
                                    tokens=_stored_tokens(stored.get("tokens")))
            self.usage.add(completion, 0)
            return completion
        completion, retries = self._ask(body)
        if completion.refused is not None and body.get("logprobs") and "logprobs" in completion.refused:
            # A server without log-probabilities: ask again (this request, and every other in flight that
            # asked with them), probabilities "not available".
            self.logprobs = False
            return self.complete(messages)
        if completion.refused is None:
            self.cache.put(key, {"text": completion.text, "prompt_tokens": completion.prompt_tokens,
                                 "completion_tokens": completion.completion_tokens,
                                 "tokens": [[t.text, [list(a) for a in t.alternatives]] for t in completion.tokens]
                                 if completion.tokens is not None else None})
        self.usage.add(completion, retries)
        if self.usage.refused > self.settings.max_failures:
            raise EndpointError(f"{self.url}: {self.usage.refused} requests refused (endpoint.max_failures is "
                                f"{self.settings.max_failures}); first: {self.usage.refusals[0]}")
        return completion

    def _ask(self, body: dict) -> tuple[Completion, int]:
        import openai

        for attempt in range(self.settings.max_retries + 1):
            try:
                response = self.client.chat.completions.create(**body)
            except (openai.APITimeoutError, openai.APIConnectionError) as exc:
                problem, wait = f"{type(exc).__name__}: {exc}", None
            except openai.APIStatusError as exc:
                status = exc.status_code
                if status in REFUSED_STATUS:
                    return Completion("", refused=f"HTTP {status}: {_message(exc)}"), attempt
                if status not in RETRY_STATUS and status < 500:
                    raise EndpointError(f"{self.url} answered HTTP {status}: {_message(exc)}{_hint(status, self)}") \
                        from None
                problem, wait = f"HTTP {status}: {_message(exc)}", retry_after(exc.response.headers)
            else:
                return self._completion(response), attempt
            if attempt == self.settings.max_retries:
                raise EndpointError(f"{self.url}: no answer after {attempt + 1} attempts ({problem}); answers so far "
                                    "are cached, so running again resumes")
            time.sleep(self._backoff(attempt) if wait is None else min(wait, MAX_WAIT))
        raise AssertionError("unreachable")

    def _backoff(self, attempt: int) -> float:
        with self.usage.lock:
            jitter = self.random.uniform(0.5, 1.5)  # spread out the retries of concurrent requests
        return min(MAX_WAIT, self.settings.backoff * 2**attempt * jitter)

    @staticmethod
    def _completion(response) -> Completion:
        choice = response.choices[0] if response.choices else None
        text = (choice.message.content or "") if choice is not None and choice.message else ""
        usage = response.usage
        content = getattr(getattr(choice, "logprobs", None), "content", None) if choice is not None else None
        tokens = [TokenChoice(t.token, tuple((a.token, float(a.logprob)) for a in (t.top_logprobs or [])))
                  for t in content] if content else None
        return Completion(text, int(getattr(usage, "prompt_tokens", 0) or 0),
                          int(getattr(usage, "completion_tokens", 0) or 0), tokens=tokens)


def _stored_tokens(stored) -> list[TokenChoice] | None:
    """Cached answer tokens back as `TokenChoice`s (None: none cached, or an unreadable entry)."""
    try:
        return [TokenChoice(str(text), tuple((str(a), float(lp)) for a, lp in alternatives))
                for text, alternatives in stored] if stored else None
    except (TypeError, ValueError):
        return None


def retry_after(headers) -> float | None:
    """Seconds a Retry-After header asks to wait (a number or an HTTP date), or None."""
    value = (headers or {}).get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, moment.timestamp() - time.time())


def _message(exc) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        detail = body.get("error", body)
        detail = detail.get("message", detail) if isinstance(detail, dict) else detail
        detail = detail.get("detail", detail) if isinstance(detail, dict) else detail
        return str(detail)[:300]
    return str(getattr(exc, "message", exc))[:300]


def _hint(status: int, client: EndpointClient) -> str:
    if 300 <= status < 400:
        return " (a redirect: dentvlm never follows one, so images cannot be sent on to another host; use the " \
               "final URL as endpoint.base_url)"
    if status == 401:
        return f" (check the key in ${client.settings.api_key_env})"
    if status == 404:
        return f" (check endpoint.base_url and endpoint.model {client.settings.model!r})"
    return ""
