"""The ``endpoint:`` section of `dentvlm test`, and the privacy rule: patient images and text go to a
host that is not this machine only when the configuration says so."""

from __future__ import annotations

import ipaddress
import os
from urllib.parse import urlsplit

RESOLUTIONS = ("model", "stored")
IMAGE_FORMATS = ("png", "jpeg")
TOKEN_LIMIT_PARAMS = ("max_completion_tokens", "max_tokens")
# A key the OpenAI client needs for a local server that checks none.
NO_KEY = "no-key"


class EndpointSettings:
    """Evaluate a model behind an OpenAI-compatible chat completions API instead of the local model,
    on the same split, prompts and images, into the same results folder as a variant named `name`.

    Args:
        base_url: The API's base URL, e.g. https://api.openai.com/v1, or http://127.0.0.1:8000/v1 for
            `dentvlm serve` or vLLM (None: evaluate the local model).
        model: Model name sent with each request (e.g. gpt-4o).
        name: Variant name in the results tables (default: `model`).
        api_key_env: Environment variable holding the API key. Keys are never read from a config file or
            a flag (the run's config is saved and logged).
        allow_external: Allow sending patient images and text to a host that is not this machine.
        concurrency: Requests in flight at once.
        max_retries: Retries of a request after HTTP 429, 408, 5xx, a timeout or a lost connection.
        backoff: Seconds before the first retry; doubles each retry (with jitter, at most 60 s). A
            Retry-After header from the server wins.
        timeout: Seconds to wait for one response.
        max_failures: Requests the API may refuse (HTTP 400/413/422, e.g. a content filter) before the run
            stops; refused requests count as unparseable answers.
        max_tokens: Answer length limit (default: model.max_new_tokens, as the local model).
        token_limit_param: Request field for the length limit: max_completion_tokens (current OpenAI
            models) or max_tokens (older servers).
        temperature: Sampling temperature (0: greedy, as the local model).
        few_shot: Training examples shown before each question (0: zero-shot), as `base_few_shot`.
        resolution: model (images as the local model sees them: model.model_path's processor with the
            data.* image settings) or stored (as stored in the shards).
        image_format: png (every pixel as the local model sees it) or jpeg (smaller requests).
        jpeg_quality: JPEG quality when image_format is jpeg.
        cache_dir: Response cache folder (default: endpoint_cache in the run folder). Answers are keyed by
            the whole request, so an interrupted run resumes without asking (or paying) twice.
        input_price: Price per million prompt tokens, for the cost in the results (None: no cost).
        output_price: Price per million completion tokens.
        logprobs: Ask for the answer tokens' log-probabilities (top 20 alternatives) to estimate each class's
            probability (`dentvlm.endpoint.logprobs`); a server that refuses them is asked without, and the
            probability metrics of the variant read "not available".
    """

    def __init__(self, base_url: str | None = None, model: str = "", name: str | None = None,
                 api_key_env: str = "OPENAI_API_KEY", allow_external: bool = False, concurrency: int = 4,
                 max_retries: int = 6, backoff: float = 1.0, timeout: float = 120.0, max_failures: int = 10,
                 max_tokens: int | None = None, token_limit_param: str = "max_completion_tokens",
                 temperature: float = 0.0, few_shot: int = 0, resolution: str = "model", image_format: str = "png",
                 jpeg_quality: int = 95, cache_dir: str | None = None, input_price: float | None = None,
                 output_price: float | None = None, logprobs: bool = True):
        self.base_url, self.model, self.name = base_url, model, name or model
        self.api_key_env, self.allow_external = api_key_env, allow_external
        self.concurrency, self.max_retries, self.backoff, self.timeout = concurrency, max_retries, backoff, timeout
        self.max_failures, self.max_tokens, self.token_limit_param = max_failures, max_tokens, token_limit_param
        self.temperature, self.few_shot, self.resolution = temperature, few_shot, resolution
        self.image_format, self.jpeg_quality, self.cache_dir = image_format, jpeg_quality, cache_dir
        self.input_price, self.output_price = input_price, output_price
        self.logprobs = logprobs
        if base_url is not None:
            self.check()

    @property
    def enabled(self) -> bool:
        return self.base_url is not None

    def check(self) -> None:
        """Raise `ValueError` naming the key of a bad setting."""
        if not self.model:
            raise ValueError("endpoint.model: name the model to ask (e.g. gpt-4o, or any name for dentvlm serve)")
        parts = urlsplit(self.base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"endpoint.base_url {self.base_url!r}: expected http(s)://host[:port]/path")
        checks = [(self.concurrency >= 1, "concurrency must be >= 1"),
                  (self.max_retries >= 0, "max_retries must be >= 0"),
                  (self.backoff >= 0 and self.timeout > 0, "backoff must be >= 0 and timeout > 0"),
                  (self.temperature >= 0, "temperature must be >= 0"), (self.few_shot >= 0, "few_shot must be >= 0"),
                  (self.resolution in RESOLUTIONS, f"resolution must be one of {RESOLUTIONS}"),
                  (self.image_format in IMAGE_FORMATS, f"image_format must be one of {IMAGE_FORMATS}"),
                  (self.token_limit_param in TOKEN_LIMIT_PARAMS,
                   f"token_limit_param must be one of {TOKEN_LIMIT_PARAMS}")]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"endpoint.{message}")
        if not self.allow_external and not is_local_host(parts.hostname):
            raise ValueError(f"endpoint.base_url {safe_url(self.base_url)} is not on this machine: evaluating it sends "
                             "patient images and text there; set endpoint.allow_external: true to allow it")

    def api_key(self) -> str:
        """The key from `api_key_env`; a placeholder for a local server without one.

        Raises:
            ValueError: an external API and no key in the environment.
        """
        key = os.environ.get(self.api_key_env, "")
        if key:
            return key
        if is_local_host(urlsplit(self.base_url).hostname or ""):
            return NO_KEY
        raise ValueError(f"endpoint.api_key_env: ${self.api_key_env} is not set; export the API key there "
                         "(it is never read from a config file)")


def is_local_host(host: str) -> bool:
    """True only for what provably is this machine: a literal loopback address, or ``localhost`` itself.
    Any other name (``evil.localhost``, ``localhost.``) is resolved through DNS and may point anywhere."""
    host = host.strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def safe_url(url: str) -> str:
    """`url` without user, password, query or fragment: what results and messages may show."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"
