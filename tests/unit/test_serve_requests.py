"""`dentvlm serve`'s request checks (issue class: serving input costs and errors): every input error is a 4xx
with its reason, and a request field the server does not honour is refused rather than silently ignored."""

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image

from dentvlm.openai_chat import BadChatRequest, ImageLimits, image_data_url
from dentvlm.serve.api import CheckedOpenAISpec, DentChatRequest
from dentvlm.serve.requests import RequestReader, ServingLimits

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


@pytest.fixture
def client():
    spec = CheckedOpenAISpec(lambda: None)
    spec._reader = RequestReader(None, LIMITS)  # every request below is refused before it needs the encoder
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
