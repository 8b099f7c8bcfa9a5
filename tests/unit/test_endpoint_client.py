"""The endpoint client against a scripted OpenAI-style server on loopback (real HTTP, real openai client):
retries with backoff on 429/5xx (Retry-After honoured), refused requests counted, fatal errors in one
line, answers cached on disk so a second run asks nothing."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from dentvlm.endpoint.cache import ResponseCache
from dentvlm.endpoint.client import EndpointClient, EndpointError, retry_after
from dentvlm.endpoint.settings import EndpointSettings

ANSWER = {"id": "c1", "object": "chat.completion", "created": 0, "model": "m",
          "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "caries"}}],
          "usage": {"prompt_tokens": 11, "completion_tokens": 2, "total_tokens": 13}}


class Script:
    """Replies in order: (status, headers); the last one repeats. Records request bodies and headers."""

    def __init__(self, replies):
        self.replies, self.bodies, self.auth = list(replies), [], []
        self.refuse_logprobs = False  # answer a request that asks for log-probabilities with a 400, as dentvlm serve
        self.delay = 0.0  # seconds before answering: keeps concurrent requests in flight together


@pytest.fixture
def server():
    scripts: list[Script] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server's name)
            script = scripts[-1]
            length = int(self.headers["Content-Length"])
            script.bodies.append(json.loads(self.rfile.read(length)))
            script.auth.append(self.headers.get("Authorization"))
            time.sleep(script.delay)
            if script.refuse_logprobs and "logprobs" in script.bodies[-1]:
                status, headers, reply = 400, {}, [{"error": {"message": "not supported by this server: logprobs, "
                                                              "top_logprobs", "type": "x"}}]
            else:
                status, headers, *reply = script.replies.pop(0) if len(script.replies) > 1 else script.replies[0]
            body = reply[0] if reply else ANSWER if status == 200 else {
                "error": {"message": f"scripted {status}", "type": "x"}}
            data = json.dumps(body).encode()
            self.send_response(status)
            for name, value in {"Content-Type": "application/json", **headers}.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()

    def script(*replies) -> tuple[Script, str]:
        scripts.append(Script(replies))
        return scripts[-1], f"http://127.0.0.1:{httpd.server_address[1]}/v1"

    yield script
    httpd.shutdown()


def client(url, tmp_path, **settings) -> EndpointClient:
    options = {"backoff": 0.01, "max_retries": 3, "api_key_env": "TEST_ENDPOINT_KEY", **settings}
    return EndpointClient(EndpointSettings(base_url=url, model="m", **options), ResponseCache(tmp_path / "cache"), 16)


MESSAGES = [{"role": "user", "content": [{"type": "text", "text": "Which conditions?"}]}]


def test_retries_429_and_5xx_then_answers_and_caches(server, tmp_path, monkeypatch):
    monkeypatch.setenv("TEST_ENDPOINT_KEY", "sk-abc")
    script, url = server((429, {"Retry-After": "0"}), (503, {}), (200, {}))
    asker = client(url, tmp_path)
    answer = asker.complete(MESSAGES)
    assert (answer.text, answer.prompt_tokens, answer.completion_tokens, answer.cached) == ("caries", 11, 2, False)
    assert asker.usage.retries == 2 and len(script.bodies) == 3
    assert script.auth == ["Bearer sk-abc"] * 3
    body = script.bodies[0]
    assert body["model"] == "m" and body["temperature"] == 0 and body["max_completion_tokens"] == 16

    again = client(url, tmp_path)  # a new run: the answer is on disk
    cached = again.complete(MESSAGES)
    assert cached.cached and cached.text == "caries" and len(script.bodies) == 3
    assert (again.usage.cached, again.usage.prompt_tokens, again.usage.cached_prompt_tokens) == (1, 0, 11)


def test_other_request_other_answer(server, tmp_path):
    script, url = server((200, {}))
    asker = client(url, tmp_path)
    asker.complete(MESSAGES)
    asker.complete([{"role": "user", "content": [{"type": "text", "text": "Another question"}]}])
    client(url, tmp_path, temperature=0.7).complete(MESSAGES)  # other settings: another request
    assert len(script.bodies) == 3


def test_damaged_cache_entry_is_asked_again(server, tmp_path):
    script, url = server((200, {}))
    client(url, tmp_path).complete(MESSAGES)
    for entry in (tmp_path / "cache").rglob("*.json"):
        entry.write_text("{trunc")
    assert not client(url, tmp_path).complete(MESSAGES).cached and len(script.bodies) == 2


def test_gives_up_after_retries_and_says_how_to_resume(server, tmp_path):
    script, url = server((500, {}))
    with pytest.raises(EndpointError, match=r"no answer after 4 attempts \(HTTP 500: scripted 500\).*resumes"):
        client(url, tmp_path).complete(MESSAGES)
    assert len(script.bodies) == 4


@pytest.mark.parametrize(("status", "words"), [(401, "check the key in \\$TEST_ENDPOINT_KEY"),
                                               (404, "check endpoint.base_url and endpoint.model 'm'"),
                                               (403, "HTTP 403")])
def test_errors_retrying_cannot_fix_stop_at_once(server, tmp_path, status, words):
    script, url = server((status, {}))
    with pytest.raises(EndpointError, match=words):
        client(url, tmp_path).complete(MESSAGES)
    assert len(script.bodies) == 1


def test_refused_requests_are_counted_then_stop_the_run(server, tmp_path):
    script, url = server((400, {}))
    asker = client(url, tmp_path, max_failures=1)
    refused = asker.complete(MESSAGES)
    assert refused.text == "" and refused.refused == "HTTP 400: scripted 400" and asker.usage.refused == 1
    with pytest.raises(EndpointError, match="2 requests refused"):
        asker.complete(MESSAGES)
    assert not list((tmp_path / "cache").rglob("*.json"))  # a refusal is asked again next run


def test_retry_after_header():
    assert retry_after({"retry-after": "2.5"}) == 2.5
    assert retry_after({}) is None
    assert retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0  # in the past
    assert retry_after({"retry-after": "soon"}) is None


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_is_never_followed(server, tmp_path, status):
    """A loopback server that redirects elsewhere must not get the images sent on there. (The target here
    is the same scripted server, which records every request: a followed redirect would be a second.)"""
    script, url = server((status, {"Location": "/v1/elsewhere/chat/completions"}))
    with pytest.raises(EndpointError, match=f"HTTP {status}.*never follows"):
        client(url, tmp_path).complete(MESSAGES)
    assert len(script.bodies) == 1


def test_a_local_endpoint_ignores_proxy_settings(server, tmp_path, monkeypatch):
    """HTTP(S)_PROXY from the environment would carry requests for a "local" server off the machine."""
    monkeypatch.setenv("HTTP_PROXY", "http://10.255.255.1:3128")
    monkeypatch.setenv("http_proxy", "http://10.255.255.1:3128")
    script, url = server((200, {}))
    assert client(url, tmp_path, timeout=5).complete(MESSAGES).text == "caries" and len(script.bodies) == 1


def with_logprobs(answer: str, tokens: list[tuple[str, dict[str, float]]]) -> dict:
    """An OpenAI/vLLM-style answer carrying each token's top log-probabilities."""
    content = [{"token": text, "logprob": max(top.values()), "bytes": None,
                "top_logprobs": [{"token": t, "logprob": lp, "bytes": None} for t, lp in top.items()]}
               for text, top in tokens]
    choice = {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": answer},
              "logprobs": {"content": content}}
    return {**ANSWER, "choices": [choice]}


def test_log_probabilities_are_asked_kept_and_cached(server, tmp_path):
    reply = with_logprobs("caries", [("car", {"car": -0.1, "ging": -2.5}), ("ies", {"ies": -0.01})])
    script, url = server((200, {}, reply))
    answer = client(url, tmp_path).complete(MESSAGES)
    assert script.bodies[0]["logprobs"] is True and script.bodies[0]["top_logprobs"] == 20
    assert [t.text for t in answer.tokens] == ["car", "ies"]
    assert answer.tokens[0].alternatives == (("car", -0.1), ("ging", -2.5))
    cached = client(url, tmp_path).complete(MESSAGES)
    assert cached.cached and cached.tokens == answer.tokens and len(script.bodies) == 1


def test_a_server_refusing_log_probabilities_is_asked_without_them(server, tmp_path):
    script, url = server((200, {}))
    script.refuse_logprobs = True
    asker = client(url, tmp_path)
    answer = asker.complete(MESSAGES)
    assert answer.text == "caries" and answer.tokens is None and asker.usage.refused == 0
    assert "logprobs" in script.bodies[0] and "logprobs" not in script.bodies[1] and not asker.logprobs


def test_every_request_in_flight_when_log_probabilities_are_refused_is_asked_again(server, tmp_path):
    """Concurrent requests: the first refusal turns log-probabilities off; the others that had asked with
    them must be asked again too, not counted as refused (they used to come back empty)."""
    from concurrent.futures import ThreadPoolExecutor

    script, url = server((200, {}))
    script.refuse_logprobs, script.delay = True, 0.5
    asker = client(url, tmp_path)
    questions = [[{"role": "user", "content": [{"type": "text", "text": f"Question {n}"}]}] for n in range(3)]
    bodies = [asker.body(q) for q in questions]  # all three ask with log-probabilities, as if in flight
    assert all(b["logprobs"] for b in bodies)
    with ThreadPoolExecutor(3) as pool:
        answers = list(pool.map(asker.complete, questions))
    assert [a.text for a in answers] == ["caries"] * 3 and asker.usage.refused == 0
    assert sum("logprobs" in body for body in script.bodies) >= 1 and not asker.logprobs
