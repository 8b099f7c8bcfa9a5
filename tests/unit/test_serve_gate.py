"""What every request to `dentvlm serve` passes before it is routed (issue classes: paths open without the API
key; request cost not bounded before work starts): with a key set, each path the app answers (its router's
routes, the API docs, what LitServe adds) and unknown paths need ``Authorization: Bearer <key>``; a body over
--max_request_bytes is refused from its Content-Length before it is read, and counted as a chunked body
arrives. The app is the one `build_server` makes; nothing is started."""

import json

import pytest
from fastapi.testclient import TestClient
from starlette.routing import Route

from dentvlm.openai_chat import ImageLimits
from dentvlm.serve.requests import ServingLimits
from dentvlm.serve.server import build_server

KEY = "sk-gate-3f9a"
LIMIT = 4096
UNKNOWN = ["/nope", "/v1", "/v1/", "/v1/completions", "/v1/embeddings", "/docs/", "/static/x.js", "/..%2fopenapi.json",
           "/shutdown", "/metrics"]


@pytest.fixture(scope="module")
def app(tiny_model_dir):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GATE_TEST_KEY", KEY)
        server = build_server(str(tiny_model_dir), ServingLimits(ImageLimits(), 64, 16), "GATE_TEST_KEY",
                              max_request_bytes=LIMIT, model_name="tiny-gate")
    return server.app


@pytest.fixture(scope="module")
def client(app):
    return TestClient(app, raise_server_exceptions=False)  # no lifespan: routes needing workers answer 5xx


def every_request(app) -> list[tuple[str, str]]:
    """(method, path) for each method of each route of the app's router (path parameters filled in), and
    for unknown paths."""
    requests = []
    for route in app.routes:
        assert isinstance(route, Route), route  # a mount would hide paths from this list
        path = route.path.replace("{model_id:path}", "tiny-gate")
        assert "{" not in path, path
        requests += [(method, path) for method in sorted(route.methods)]
    assert {"/docs", "/redoc", "/openapi.json", "/health", "/info", "/v1/models", "/v1/chat/completions"} <= \
        {path for _, path in requests}
    return requests + [(method, path) for path in UNKNOWN for method in ("GET", "POST")]


def test_every_path_needs_the_key(app, client):
    for method, path in every_request(app):
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY},
                        {"Authorization": f"Basic {KEY}"}, {"X-API-Key": KEY}):
            response = client.request(method, path, headers=headers)
            assert response.status_code == 401, (method, path, headers, response.status_code)
            if method != "HEAD":
                assert response.json()["error"]["code"] == "invalid_api_key"
            assert response.headers["www-authenticate"] == "Bearer"
        for scheme in ("Bearer", "bearer"):
            response = client.request(method, path, headers={"Authorization": f"{scheme} {KEY}"})
            assert response.status_code != 401, (method, path, response.text)


def test_the_docs_answer_with_the_key(client):
    headers = {"Authorization": f"Bearer {KEY}"}
    assert client.get("/docs", headers=headers).status_code == 200
    assert "/v1/models" in client.get("/openapi.json", headers=headers).json()["paths"]
    assert client.get("/nope", headers=headers).status_code == 404


def test_models_in_the_openai_format(client):
    headers = {"Authorization": f"Bearer {KEY}"}
    listed = client.get("/v1/models", headers=headers).json()
    assert listed["object"] == "list" and [m["id"] for m in listed["data"]] == ["tiny-gate"]
    card = client.get("/v1/models/tiny-gate", headers=headers).json()
    assert card == listed["data"][0] and card["object"] == "model" and card["owned_by"] == "dentvlm"
    assert isinstance(card["created"], int) and card["created"] > 1_600_000_000
    missing = client.get("/v1/models/gpt-4o", headers=headers)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_not_found"


def chat_body(size: int) -> bytes:
    """A chat request of exactly `size` bytes that the reader refuses (n=0) once it is parsed."""
    head = json.dumps({"model": "m", "n": 0, "messages": [{"role": "user", "content": ""}]}).encode()
    return head.replace(b'"content": ""', b'"content": "' + b"a" * (size - len(head)) + b'"')


def chunks(body: bytes, size: int = 1000):
    yield from (body[i:i + size] for i in range(0, len(body), size))


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_bodies_over_the_limit_are_refused_unparsed(client, chunked):
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    for size, status in [(LIMIT, 400), (LIMIT + 1, 413), (10 * LIMIT, 413)]:
        body = chat_body(size)
        response = client.post("/v1/chat/completions", content=chunks(body) if chunked else body, headers=headers)
        assert response.status_code == status, (size, response.text)
        assert ("request body over 4,096 bytes" if status == 413 else "n 0 is outside") in \
            response.json()["error"]["message"]


def test_a_content_length_over_the_limit_is_refused_before_the_body_is_read(app):
    """The ASGI app itself: a 413 with not one body chunk taken from the server."""
    import asyncio

    sent, taken = [], []

    async def receive():
        taken.append(1)
        return {"type": "http.request", "body": b"{}", "more_body": True}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions", "raw_path": b"/v1/chat/completions",
             "query_string": b"", "root_path": "", "scheme": "http", "server": ("127.0.0.1", 8000),
             "client": ("127.0.0.1", 5000), "http_version": "1.1", "asgi": {"version": "3.0"},
             "headers": [(b"authorization", f"Bearer {KEY}".encode()), (b"content-length", b"50000000")]}
    asyncio.run(app(scope, receive, send))
    assert sent[0]["status"] == 413 and not taken
