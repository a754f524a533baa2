"""core/sdk.py subclasses ``m3ter.M3ter`` and overrides private methods of its base client: this test
fails loudly when the installed SDK no longer has the shape the override relies on (the ``sdk``
extra pins ``m3ter>=0.9.0,<0.10``; a new SDK needs this test, and core/sdk.py, looked at again)."""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import inspect

import pytest

from m3ter_provider.core import sdk

m3ter = pytest.importorskip("m3ter", reason="the optional extra 'sdk' (the m3ter package) is not installed")


def test_the_installed_sdk_is_a_version_the_pin_allows():
    major, minor = (int(part) for part in importlib.metadata.version("m3ter").split(".")[:2])
    assert (major, minor) == (0, 9), "core/sdk.py was written against m3ter 0.9.x: check its overrides"


@pytest.mark.parametrize(("name", "parameters"), [("_prepare_options", ["self", "options"]),
                                                  ("_prepare_request", ["self", "request"])])  # fmt: skip
def test_the_private_hooks_the_subclass_overrides_exist_with_the_same_parameters(name, parameters):
    method = getattr(m3ter.M3ter, name, None)
    assert callable(method), f"m3ter.M3ter.{name} is gone: core/sdk.py's override would never run"
    assert list(inspect.signature(method).parameters) == parameters


def test_the_sdk_still_reads_custom_auth_copy_and_with_options():
    for name in sdk.OVERRIDDEN:
        assert hasattr(m3ter.M3ter, name), f"m3ter.M3ter.{name} is gone"
    assert isinstance(inspect.getattr_static(m3ter.M3ter, "custom_auth"), property)
    # the base client (SyncAPIClient) calls the two hooks and sends custom_auth with each request
    source = inspect.getsource(m3ter.M3ter.__mro__[1])
    for use in ("self._prepare_options(", "self._prepare_request(", "self.custom_auth"):
        assert use in source, f"the SDK's base client no longer calls {use}"


def test_the_sdk_takes_the_token_and_expiry_the_subclass_sets():
    init = inspect.signature(m3ter.M3ter.__init__).parameters
    for name in ("api_key", "api_secret", "org_id", "base_url", "timeout", "max_retries", "default_headers"):
        assert name in init, f"m3ter.M3ter() no longer takes {name}"
    # _refresh_token sets these two attributes; the SDK's own _prepare_options reads them
    own = inspect.getsource(m3ter.M3ter._prepare_options)
    assert "self.token" in own
    assert "self.token_expiry" in own
    client = m3ter.M3ter(api_key="k", api_secret="s", org_id="o", token="t",
                         token_expiry=dt.datetime.now() + dt.timedelta(hours=1))  # fmt: skip
    assert client.token == "t"
    assert isinstance(client.token_expiry, dt.datetime)
