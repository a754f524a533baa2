from __future__ import annotations

import pytest

from m3ter_provider.core.config import M3terSettings, derive_ingest_url
from m3ter_provider.errors import M3terConfigError


def settings(**overrides):
    fields = {"login": "AKID", "password": "the-api-secret", "host": None, "extra": {"org_id": "org-1"}}
    fields.update(overrides)
    return M3terSettings.from_connection_fields("my_m3ter", **fields)


def test_defaults_point_at_production_m3ter():
    s = settings()
    assert s.api_url == "https://api.m3ter.com"
    assert s.ingest_url == "https://ingest.m3ter.com"
    assert s.token_url == "https://api.m3ter.com/oauth/token"
    assert s.console_url == "https://console.m3ter.com"
    assert (s.timeout, s.max_retries, s.org_id, s.access_key_id) == (60.0, 5, "org-1", "AKID")


def test_secret_is_not_in_repr():
    assert "the-api-secret" not in repr(settings())


@pytest.mark.parametrize(
    ("api_url", "ingest_url"),
    [
        ("https://api.m3ter.com", "https://ingest.m3ter.com"),
        ("https://api.dev.m3ter.com", "https://ingest.dev.m3ter.com"),
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
        ("http://localhost:9000/base", "http://localhost:9000/base"),
        ("https://api.eu.example.com:8443", "https://ingest.eu.example.com:8443"),
        # host names are case-insensitive: an upper-case host still gets its ingest host
        ("https://API.m3ter.com", "https://ingest.m3ter.com"),
        ("https://Api.Dev.M3ter.com:8443", "https://ingest.dev.m3ter.com:8443"),
    ],
)
def test_ingest_url_is_derived_from_the_api_url(api_url, ingest_url):
    assert derive_ingest_url(api_url) == ingest_url
    assert settings(host=api_url).ingest_url == ingest_url


def test_host_without_scheme_means_https_and_port_is_joined():
    assert settings(host="api.dev.m3ter.com").api_url == "https://api.dev.m3ter.com"
    # Airflow's URI form splits m3ter://http://k:s@127.0.0.1:8080/ into host and port
    assert settings(host="http://127.0.0.1", port=8080).api_url == "http://127.0.0.1:8080"
    assert settings(host="https://api.m3ter.com/").api_url == "https://api.m3ter.com"


def test_prefixed_extras_are_read_and_plain_names_win():
    s = settings(extra={"extra__m3ter__org_id": "old", "extra__m3ter__console_url": "https://c.example.com"})
    assert (s.org_id, s.console_url) == ("old", "https://c.example.com")
    assert settings(extra={"org_id": "new", "extra__m3ter__org_id": "old"}).org_id == "new"


def test_null_and_empty_extras_fall_back_to_defaults():
    s = settings(
        extra={"org_id": "o", "ingest_url": None, "token_url": "", "timeout": None, "max_retries": ""}
    )
    assert s.ingest_url == "https://ingest.m3ter.com"
    assert s.token_url == "https://api.m3ter.com/oauth/token"
    assert (s.timeout, s.max_retries) == (60.0, 5)


def test_explicit_urls_and_numbers():
    s = settings(
        extra={
            "org_id": "o",
            "ingest_url": "https://ingest.example.com/",
            "token_url": "https://auth.example.com/oauth/token",
            "timeout": "12.5",
            "max_retries": 2,
        }
    )
    assert (s.ingest_url, s.token_url, s.timeout, s.max_retries) == (
        "https://ingest.example.com",
        "https://auth.example.com/oauth/token",
        12.5,
        2,
    )


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"login": None}, "login"),
        ({"login": "  "}, "login"),
        ({"password": None}, "password"),
        ({"password": ""}, "password"),
        ({"extra": {}}, "org_id"),
        ({"extra": {"org_id": None}}, "org_id"),
        ({"host": "ftp://api.m3ter.com"}, "host"),
        ({"host": "http://"}, "host"),
        ({"host": "https://api.m3ter.com:notaport"}, "host"),
        ({"extra": {"org_id": "o", "ingest_url": "not a url"}}, "ingest_url"),
        ({"extra": {"org_id": "o", "token_url": "https://x.example.com/t?secret=1"}}, "token_url"),
        ({"extra": {"org_id": "o", "timeout": "soon"}}, "timeout"),
        ({"extra": {"org_id": "o", "timeout": 0}}, "timeout"),
        ({"extra": {"org_id": "o", "timeout": "0"}}, "timeout"),
        ({"extra": {"org_id": "o", "timeout": -3}}, "timeout"),
        ({"extra": {"org_id": "o", "timeout": "nan"}}, "timeout"),
        ({"extra": {"org_id": "o", "timeout": "inf"}}, "timeout"),
        ({"extra": {"org_id": "o", "timeout": float("nan")}}, "timeout"),
        ({"extra": {"org_id": "o", "timeout": "1e400"}}, "timeout"),
        ({"extra": {"org_id": "o", "max_retries": "inf"}}, "max_retries"),
        ({"extra": {"org_id": "o", "max_retries": -1}}, "max_retries"),
        ({"extra": {"org_id": "o", "max_retries": 2.5}}, "max_retries"),
    ],
)
def test_bad_fields_name_the_connection_and_the_field(overrides, field):
    with pytest.raises(M3terConfigError) as err:
        settings(**overrides)
    text = str(err.value)
    assert "'my_m3ter'" in text
    assert field in text
    assert "the-api-secret" not in text


def test_messages_name_this_connection_when_the_id_is_a_throwaway():
    with pytest.raises(M3terConfigError) as err:
        M3terSettings.from_connection_fields(
            "RxeNx3Yt", login="k", password="p", host=None, extra={}, label="this connection"
        )
    assert str(err.value).startswith("this connection: extra 'org_id' is missing")
    assert "RxeNx3Yt" not in str(err.value)
    assert settings().label == "the m3ter connection 'my_m3ter'"
