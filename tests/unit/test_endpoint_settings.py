"""Endpoint settings: patient data goes to another host only with allow_external, keys only from the
environment, URLs shown without credentials."""

import pytest

from dentvlm.endpoint.settings import NO_KEY, EndpointSettings, is_local_host, safe_url


@pytest.mark.parametrize(("host", "local"), [("127.0.0.1", True), ("127.8.0.2", True), ("localhost", True),
                                             ("::1", True), ("[::1]", True), ("api.openai.com", False),
                                             ("10.0.0.5", False), ("0.0.0.0", False), ("localhost.evil.com", False),
                                             ("evil.localhost", False), ("a.b.localhost", False), ("localhost.", False),
                                             ("127.1", False), ("::ffff:7f00:1", False), ("LOCALHOST", True)])
def test_local_hosts(host, local):
    """Only what provably is this machine counts as local: names other than `localhost` itself go
    through DNS (`evil.localhost` may resolve anywhere), odd spellings of addresses are refused."""
    assert is_local_host(host) is local


def test_external_host_needs_allow_external_named_in_the_error():
    with pytest.raises(ValueError, match="endpoint.allow_external: true"):
        EndpointSettings(base_url="https://api.openai.com/v1", model="gpt-4o")
    EndpointSettings(base_url="https://api.openai.com/v1", model="gpt-4o", allow_external=True)
    EndpointSettings(base_url="http://127.0.0.1:8000/v1", model="local")


def test_key_from_the_environment_only(monkeypatch):
    monkeypatch.delenv("MY_KEY", raising=False)
    local = EndpointSettings(base_url="http://localhost:8000/v1", model="m", api_key_env="MY_KEY")
    assert local.api_key() == NO_KEY
    external = EndpointSettings(base_url="https://api.example.com/v1", model="m", api_key_env="MY_KEY",
                                allow_external=True)
    with pytest.raises(ValueError, match=r"\$MY_KEY is not set"):
        external.api_key()
    monkeypatch.setenv("MY_KEY", "sk-1")
    assert external.api_key() == "sk-1"
    assert "api_key" not in EndpointSettings.__init__.__code__.co_varnames  # no way to put one in a config


@pytest.mark.parametrize(("setting", "words"), [({"model": ""}, "endpoint.model"),
                                                ({"concurrency": 0}, "endpoint.concurrency"),
                                                ({"resolution": "full"}, "endpoint.resolution"),
                                                ({"base_url": "ftp://x/v1"}, "endpoint.base_url")])
def test_bad_settings_name_their_key(setting, words):
    with pytest.raises(ValueError, match=words):
        EndpointSettings(**{"base_url": "http://127.0.0.1:1/v1", "model": "m", **setting})


def test_safe_url_drops_credentials_and_query():
    assert safe_url("https://user:pw@api.example.com:8443/v1?key=secret#x") == "https://api.example.com:8443/v1"
    assert safe_url("http://[::1]:8000/v1") == "http://[::1]:8000/v1"
