"""`dentvlm serve`'s request checks (issue class: serving input costs and errors): every input error is a 4xx
with its reason, a request field the server does not honour is refused rather than silently ignored, a prompt
whose text alone passes the context is refused without being tokenised, and one slow check holds up no other."""

import threading
import time
from types import SimpleNamespace

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image

from dentvlm.data.collate import ChatEncoder
from dentvlm.model.build import load_processor
from dentvlm.openai_chat import BadChatRequest, ImageLimits, image_data_url
from dentvlm.serve.api import CheckedOpenAISpec, DentChatRequest
from dentvlm.serve.requests import RequestReader, ServingLimits, characters_per_token

LIMITS = ServingLimits(ImageLimits(max_request_pixels=1_000_000), max_new_tokens=64, default_max_tokens=16)
HELLO = [{"role": "user", "content": "hello"}]


def decoding(**fields):
    return RequestReader(None, LIMITS).decoding(DentChatRequest(messages=HELLO, **fields))


@pytest.mark.parametrize(("fields", "words"), [
    ({"logit_bias": {"42": 5}}, "logit_bias"), ({"seed": 0}, "seed"), ({"logprobs": True}, "logprobs"),
    ({"top_logprobs": 3}, "top_logprobs"), ({"tools": [{"type": "function", "function": {
        "name": "f", "description": "d", "parameters": {}}}]}, "tools"), ({"stop": ["\n"]}, "stop"),
    ({"presence_penalty": 0.5}, "presence_penalty"), ({"user": "u-1"}, "user"), ({"store": True}, "store"),
    ({"parallel_tool_calls": True, "seed": 3}, "parallel_tool_calls, seed"), ({"tool_choice": "none"}, "tool_choice"),
    ({"reasoning_effort": "low"}, "reasoning_effort"), ({"metadata": {"a": "b"}}, "metadata"),
    ({"modalities": ["text", "audio"]}, "modalities"),
])
def test_options_the_server_does_not_honour_are_refused(fields, words):
    with pytest.raises(BadChatRequest, match=f"not supported by this server: {words} ") as caught:
        decoding(**fields)
    assert caught.value.status == 400


def test_defaults_and_nulls_are_accepted():
    plain = decoding()
    assert (plain.max_new_tokens, plain.temperature, plain.top_p) == (16, 0.0, 1.0)
    sent = decoding(logprobs=False, stop=None, seed=None, presence_penalty=0, frequency_penalty=0.0, logit_bias={},
                    tools=[], user=None, n=None, temperature=None, top_p=None, max_tokens=None, stream=False,
                    response_format={"type": "text"}, model="anything")
    assert (sent.max_new_tokens, sent.temperature, sent.top_p) == (16, 0.0, 1.0)
    sampled = decoding(temperature=0.7, top_p=0.9, n=3, max_completion_tokens=64)
    assert (sampled.max_new_tokens, sampled.temperature, sampled.top_p) == (64, 0.7, 0.9)


@pytest.mark.parametrize(("fields", "words"), [
    ({"n": 0}, "n 0 is outside 1..8"), ({"n": 9}, "n 9 is outside"), ({"n": -1}, "n -1"),
    ({"max_tokens": 0}, "max_tokens 0 is outside 1..64"), ({"max_completion_tokens": 65}, "max_tokens 65"),
    ({"temperature": -0.1}, "temperature must be >= 0"), ({"temperature": float("nan")}, "temperature"),
    ({"temperature": float("inf")}, "temperature"), ({"top_p": 0}, "top_p in"), ({"top_p": 1.5}, "top_p in"),
    ({"response_format": {"type": "json_object"}}, "json_object"),
])
def test_bad_values_are_a_400_with_the_reason(fields, words):
    with pytest.raises(BadChatRequest, match=words) as caught:
        decoding(**fields)
    assert caught.value.status == 400


@pytest.fixture(scope="module")
def reader(tiny_model_dir):
    return RequestReader(ChatEncoder(load_processor(str(tiny_model_dir)), 4096, "error", context_len=4096), LIMITS)


@pytest.fixture
def client(reader):
    spec = CheckedOpenAISpec(lambda: None)
    spec._reader = reader
    app = FastAPI()
    app.add_api_route("/v1/chat/completions", spec.chat_completion, methods=["POST"])
    return TestClient(app)


def post(client, **body):
    return client.post("/v1/chat/completions", json={"model": "m", "messages": HELLO, **body})


@pytest.mark.parametrize(("body", "words"), [
    ({"n": 0}, "n 0 is outside"), ({"logit_bias": {"1": 2}}, "logit_bias"), ({"seed": 1}, "seed"),
    ({"logprobs": True, "top_logprobs": 2}, "logprobs, top_logprobs"),
    ({"messages": []}, "messages is empty"),
    ({"messages": [{"role": "user", "content": "hi", "name": "dr_who"}]}, "name not supported"),
])
def test_http_answers_4xx_in_the_openai_error_shape(client, body, words):
    response = post(client, **body)
    assert response.status_code == 400, response.text
    assert words in response.json()["error"]["message"]


def test_request_pixels_and_shapes_are_refused_over_http(client):
    big = image_data_url(Image.new("RGB", (1200, 1000)))  # 1.2 Mpx, over the request's 1 Mpx
    thin = image_data_url(Image.new("RGB", (900, 1)))
    for url, words in [(big, "over the limit of 1,000,000 per request"), (thin, "more than 200 times the other")]:
        content = [{"type": "image_url", "image_url": {"url": url}}]
        response = post(client, messages=[{"role": "user", "content": content}])
        assert response.status_code == 400 and words in response.json()["error"]["message"], response.text
    assert post(client, n="two").status_code == 422  # not even a number: FastAPI's own 4xx


def test_characters_per_token_bounds_tokens_from_below(reader):
    tokenizer = reader.encoder.processor.tokenizer
    longest = reader.characters_per_token
    assert longest == max(len(token) for token in tokenizer.get_vocab()) >= len("<|vision_start|>")
    for text in ["tooth " * 500, "a" * 3000, " " * 3000, "<|vision_start|>" * 200, "periodontitis" * 300,
                 "é\u0301ü\u0308" * 500, "龋齿🦷" * 400, "\n\t\r" * 500]:
        assert len(tokenizer(text)["input_ids"]) * longest >= len(text), text[:20]
    normalising = SimpleNamespace(get_vocab=lambda: {"ab": 0, "abcd": 1},
                                  backend_tokenizer=SimpleNamespace(normalizer=object()))
    assert characters_per_token(normalising) == 4 * 4  # NFC can join 4 code points into one character


def over_by(reader, extra: int, max_tokens: int = 16) -> int:
    """Characters one past (`extra` 1) or at (`extra` 0) what the context leaves the text beside `max_tokens`."""
    return (reader.encoder.context_len - max_tokens) * reader.characters_per_token + extra


@pytest.mark.parametrize("shape", ["one string", "text parts", "every role", "parts beside an image"])
def test_text_past_the_context_is_refused_without_tokenising(reader, monkeypatch, shape):
    size = over_by(reader, 1)
    pixel = {"type": "image_url", "image_url": {"url": image_data_url(Image.new("RGB", (28, 28)))}}
    third, rest = size // 3, size - 2 * (size // 3)
    messages = {
        "one string": [{"role": "user", "content": "a" * size}],
        "text parts": [{"role": "user", "content": [{"type": "text", "text": "b" * third}] * 2
                        + [{"type": "text", "text": "c" * rest}]}],
        "every role": [{"role": "system", "content": "d" * third}, {"role": "user", "content": "e" * third},
                       {"role": "assistant", "content": "f" * (rest - 1)}, {"role": "user", "content": "?"}],
        "parts beside an image": [{"role": "user", "content": [pixel, {"type": "text", "text": "g" * size}]}],
    }[shape]
    monkeypatch.setattr(RequestReader, "thread_encoder", lambda self: pytest.fail("tokenised"))
    monkeypatch.setattr("dentvlm.serve.requests.from_openai_messages", lambda *a: pytest.fail("images decoded"))
    request = DentChatRequest(messages=messages)
    for step in (reader.check, reader.encode):
        with pytest.raises(BadChatRequest, match=f"prompt's {size:,} characters take more than 4,080 tokens"):
            step(request)


def test_text_at_the_bound_is_tokenised_and_counted(reader):
    request = DentChatRequest(messages=[{"role": "user", "content": "tooth " * (over_by(reader, 0) // 6)}])
    with pytest.raises(BadChatRequest, match="the prompt takes .* tokens"):  # the token count's refusal
        reader.check(request)
    fits = DentChatRequest(messages=[{"role": "user", "content": "tooth " * 500}], max_tokens=16)
    reader.check(fits)
    assert reader.encode(fits)[0].prompt_len > 500


def test_each_thread_tokenises_with_its_own_tokenizer(reader):
    seen = []  # the tokenizers themselves: kept alive, their ids stay distinct

    def check():
        reader.check(DentChatRequest(messages=HELLO))
        seen.append(reader.thread_encoder().processor.tokenizer)

    threads = [threading.Thread(target=check) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({id(tokenizer) for tokenizer in seen}) == 3
    assert all(tokenizer is not reader.encoder.processor.tokenizer for tokenizer in seen)


def test_a_slow_check_holds_up_no_other(reader, monkeypatch):
    """A request whose tokenising takes long (here: until released) leaves others free to be checked."""
    inside, release = threading.Event(), threading.Event()
    sized = ChatEncoder.sized

    def slow_for_one(self, example, training=False):
        if "slow" in example.messages[0]["content"][0]["text"]:
            inside.set()
            release.wait(30)
        return sized(self, example, training)

    monkeypatch.setattr(ChatEncoder, "sized", slow_for_one)
    request = DentChatRequest(messages=[{"role": "user", "content": "slow"}])
    slow = threading.Thread(target=reader.check, args=(request,))
    slow.start()
    try:
        assert inside.wait(30)
        started = time.monotonic()
        reader.check(DentChatRequest(messages=HELLO))
        assert time.monotonic() - started < 5
    finally:
        release.set()
        slow.join()
