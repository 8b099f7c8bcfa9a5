"""`dentvlm serve` on a loopback port with the tiny fine-tuned checkpoint, and `dentvlm test` evaluating it
through the OpenAI client: the same greedy answers, prompts and metrics as the in-process evaluation, in
one results folder; bad requests get a clear 4xx; every path needs the API key; the model is listed; the API
key never lands in a file."""

import http.client
import json
import select
import socket
import time
import urllib.error
import urllib.request

import pytest
from openai import APIStatusError, AuthenticationError, NotFoundError, OpenAI
from PIL import Image

from dentvlm.cli import main
from dentvlm.openai_chat import image_data_url

from .conftest import REPO
from .serving import Server

KEY = "sk-test-6c1f0e2b9d"  # a recognisable secret: it must appear in no file the runs write
# The server shows the model what a shard holds: the client sends each shard's own JPEG bytes, which it keeps.
# dentvlm serve refuses log-probabilities, so none are asked for (the client's fallback after a refusal is
# not what this compares).
ENDPOINT = ["--endpoint.resolution", "stored", "--endpoint.image_format", "jpeg", "--endpoint.logprobs", "false"]
# Two batches of 8 in-process; the server batches up to 4 requests as they arrive (other paddings). The test
# split only: threshold checkups are scored in-process, never generated, and only scored through an endpoint.
SHORT = ["--data.num_workers", "0", "--data.eval_batch_size", "8", "--trainer.limit_test_batches", "2",
         "--model.max_new_tokens", "8", "--results.bootstrap", "20", "--data.threshold_split", "null"]


def command(tmp_path, out, *extra):
    return ["test", "--config", str(REPO / "configs" / "tiny.yaml"), "--trainer.default_root_dir", str(tmp_path),
            "--trainer.logger", "lightning.pytorch.loggers.CSVLogger", "--trainer.logger.save_dir", str(tmp_path),
            "--results.out_dir", str(out), *SHORT, *extra]


@pytest.fixture(scope="module")
def served(trained_run, tmp_path_factory):
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    server = Server([str(trained_run / "checkpoints" / "last.ckpt"), "--max_batch_size", "4",
                     "--api_key_env", "TEST_SERVE_KEY"], env={"TEST_SERVE_KEY": KEY}, log=log)
    try:
        server.wait_ready(KEY)
        yield server
    finally:
        code = server.stop()
        assert code in (0, 130, 143, -15), (code, server.log_text())


@pytest.mark.slow
def test_endpoint_evaluation_matches_in_process(trained_run, served, tmp_path, monkeypatch):
    """Bit-identical pixels, hence the same answers: `dentvlm serve` prepares a request image exactly as
    `dentvlm shard` stores one, so the client sends each shard's stored JPEG as it is (``--endpoint.resolution
    stored --endpoint.image_format jpeg``); a PNG of the shard's pixels would be re-encoded as JPEG."""
    out = tmp_path / "results"
    main(command(tmp_path, out, "--ckpt_path", str(trained_run / "checkpoints" / "last.ckpt"),
                   "--results.baselines", "[]"))
    monkeypatch.setenv("TEST_CLIENT_KEY", KEY)
    main(command(tmp_path, out, "--endpoint.base_url", served.url, "--endpoint.model", "tiny-served",
                   "--endpoint.api_key_env", "TEST_CLIENT_KEY", "--endpoint.concurrency", "3", *ENDPOINT))

    metrics = json.loads((out / "metrics.json").read_text())
    assert list(metrics["variants"]) == ["fine-tuned", "tiny-served"]  # one folder, one table
    local, served_metrics = (metrics["variants"][name]["classification"] for name in ("fine-tuned", "tiny-served"))
    assert local["samples"] == served_metrics["samples"] == 16
    for name in ("subset_accuracy", "micro_f1", "macro_f1", "per_class_f1", "unparseable", "ci"):
        assert local[name] == served_metrics[name], name
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    by_variant = {name: {r["key"]: r for r in rows if r["variant"] == name} for name in ("fine-tuned", "tiny-served")}
    assert by_variant["fine-tuned"].keys() == by_variant["tiny-served"].keys()
    for key, row in by_variant["fine-tuned"].items():
        other = by_variant["tiny-served"][key]
        assert (row["generated"], row["prompt"], row["parsed_labels"]) == \
            (other["generated"], other["prompt"], other["parsed_labels"]), key
    assert len({r["generated"] for r in by_variant["tiny-served"].values()}) >= 1

    details = metrics["variants"]["tiny-served"]["details"]
    assert details["endpoint"] == served.url and details["requests"] >= 16 and details["cached"] == 0
    assert details["prompt_tokens"] > 16 * 20 and details["completion_tokens"] >= 16
    report = (out / "report.md").read_text()
    assert "| fine-tuned | 16 |" in report and "| tiny-served | 16 |" in report and "## Endpoints" in report

    # Run again: every answer comes from the cache, nothing is asked, the metrics stay.
    main(command(tmp_path, out, "--endpoint.base_url", served.url, "--endpoint.model", "tiny-served",
                   "--endpoint.api_key_env", "TEST_CLIENT_KEY", *ENDPOINT))
    again = json.loads((out / "metrics.json").read_text())["variants"]
    assert again["tiny-served"]["details"]["cached"] == again["tiny-served"]["details"]["requests"] >= 16
    assert again["tiny-served"]["classification"]["subset_accuracy"] == served_metrics["subset_accuracy"]
    assert list(again) == ["fine-tuned", "tiny-served"]

    leaked = [p for p in tmp_path.rglob("*") if p.is_file() and KEY.encode() in p.read_bytes()]
    assert not leaked


@pytest.mark.slow
def test_served_model_refuses_bad_requests(served):
    client = OpenAI(base_url=served.url, api_key=KEY, max_retries=0)
    pixel = image_data_url(Image.new("RGB", (28, 28), (120, 30, 30)))

    def refused(content, **params) -> APIStatusError:
        with pytest.raises(APIStatusError) as caught:
            client.chat.completions.create(model="m", messages=[{"role": "user", "content": content}], **params)
        return caught.value

    cases = [
        ([{"type": "image_url", "image_url": {"url": "https://example.com/tooth.jpg"}}], 400, "never fetches"),
        ([{"type": "image_url", "image_url": {"url": "data:image/png;base64,@@@"}}], 400, "not valid base64"),
        ([{"type": "image_url", "image_url": {"url": "data:image/png;base64,aGVsbG8="}}], 400, "not a readable image"),
        ([{"type": "image_url", "image_url": {"url": "data:text/plain;base64,aGVsbG8="}}], 400, "text/plain"),
        ([{"type": "image_url", "image_url": {"url": pixel}}] * 33, 400, "more than 32 images"),
        ("tooth " * 5000, 400, "context of 4096 tokens"),
    ]
    for content, status, words in cases:
        error = refused(content)
        assert error.status_code == status and words in error.message, (words, error.message)
    assert refused("hello", max_tokens=5000).status_code == 400
    assert "stop" in refused("hello", stop=["\n"]).message

    with pytest.raises(AuthenticationError):
        OpenAI(base_url=served.url, api_key="wrong", max_retries=0).chat.completions.create(
            model="m", messages=[{"role": "user", "content": "hello"}])
    ok = client.chat.completions.create(model="m", messages=[{"role": "user", "content": [
        {"type": "text", "text": "image-1: "}, {"type": "image_url", "image_url": {"url": pixel}},
        {"type": "text", "text": "\nWhich of these oro-dental conditions does this checkup show?"}]}],
        max_tokens=4, temperature=0)
    assert ok.usage.completion_tokens <= 4 and ok.usage.prompt_tokens > 10
    sampled = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hello"}],
                                             max_tokens=4, temperature=1.5, n=2)
    assert len(sampled.choices) == 2


@pytest.mark.slow
def test_serve_binds_loopback_only(served):
    """The kernel's table of listening sockets: the port is bound to 127.0.0.1 and nothing else."""
    listening = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in open(table).read().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, port = local.rsplit(":", 1)
            if state == "0A" and int(port, 16) == served.port:  # 0A: LISTEN
                listening.append(address)
    assert listening == ["0100007F"]  # 127.0.0.1, little-endian hex


def status_of(url: str, method: str = "GET", headers: dict | None = None) -> int:
    request = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.mark.slow
def test_every_path_needs_the_key(served):
    root = served.url.removesuffix("/v1")
    bearer = {"Authorization": f"Bearer {KEY}"}
    with urllib.request.urlopen(urllib.request.Request(f"{root}/openapi.json", headers=bearer)) as response:
        paths = list(json.load(response)["paths"])
    assert {"/health", "/info", "/v1/models", "/v1/chat/completions"} <= set(paths)
    paths = [p.replace("{model_id}", "x") for p in paths] + ["/docs", "/redoc", "/openapi.json", "/metrics", "/nope"]
    for path in paths:
        for method in ("GET", "POST"):
            assert status_of(root + path, method) == 401, (method, path)
            assert status_of(root + path, method, {"Authorization": "Bearer wrong"}) == 401, (method, path)
        assert status_of(root + path, "GET", bearer) != 401, path


@pytest.mark.slow
def test_models_through_the_openai_client(served, trained_run):
    client = OpenAI(base_url=served.url, api_key=KEY, max_retries=0)
    name = f"{trained_run.name}-last"  # the default: the checkpoint folder's name after its run's
    listed = client.models.list()
    assert [model.id for model in listed.data] == [name] and listed.data[0].owned_by == "dentvlm"
    assert client.models.retrieve(name).id == name
    with pytest.raises(NotFoundError):
        client.models.retrieve("gpt-4o")
    with pytest.raises(AuthenticationError):
        OpenAI(base_url=served.url, api_key="wrong", max_retries=0).models.list()


@pytest.mark.slow
def test_bodies_over_the_limit_are_refused_before_they_are_read(served):
    """A Content-Length over --max_request_bytes (200 MB) gets its 413 before a byte of the body is sent; a
    chunked upload (no Content-Length) gets it once the limit is passed, while it is still being sent."""
    connection = http.client.HTTPConnection("127.0.0.1", served.port, timeout=30)
    connection.putrequest("POST", "/v1/chat/completions")
    for name, value in [("Authorization", f"Bearer {KEY}"), ("Content-Type", "application/json"),
                        ("Content-Length", str(10**9))]:
        connection.putheader(name, value)
    connection.endheaders()
    response = connection.getresponse()
    assert response.status == 413 and "over 200,000,000 bytes" in json.loads(response.read())["error"]["message"]

    sent, chunk = 0, b"a" * 1_000_000
    with socket.create_connection(("127.0.0.1", served.port), timeout=30) as sock:
        sock.sendall(f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n"
                     "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n".encode())
        deadline = time.monotonic() + 120
        while not select.select([sock], [], [], 0)[0] and time.monotonic() < deadline:
            sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            sent += len(chunk)
        answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert 200_000_000 < sent < 300_000_000  # refused at the limit, not after the whole upload
