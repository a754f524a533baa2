"""Turn the fields of an ``m3ter`` connection into validated settings (no Airflow import).

The connection's ``login`` is the Access Key id, ``password`` the Api Secret, ``host`` (and
``port``) the API URL; everything else lives in ``extra``. Every extra field is read under its
plain name first and then under the ``extra__m3ter__`` prefix older connection forms saved.
``None`` and ``""`` count as absent, so the default applies.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from m3ter_provider.core.limits import (
    DEFAULT_INGEST_MACHINES,
    DEFAULT_INGEST_RATE,
    parse_ingest_machines,
    parse_ingest_rate,
)
from m3ter_provider.errors import M3terConfigError

if TYPE_CHECKING:
    from collections.abc import Mapping

DEFAULT_API_URL = "https://api.m3ter.com"
DEFAULT_CONSOLE_URL = "https://console.m3ter.com"
DEFAULT_TIMEOUT = 60.0
DEFAULT_MAX_RETRIES = 5
EXTRA_PREFIX = "extra__m3ter__"


@dataclasses.dataclass(frozen=True)
class M3terSettings:
    """Everything needed to talk to one m3ter Organization. The secret never shows in a repr."""

    conn_id: str
    access_key_id: str
    api_secret: str = dataclasses.field(repr=False)
    org_id: str
    api_url: str
    ingest_url: str
    token_url: str
    console_url: str
    timeout: float = DEFAULT_TIMEOUT
    max_retries: int = DEFAULT_MAX_RETRIES
    #: the Organization-wide ingest requests/second this deployment may use (0: no pacing)
    ingest_rate: float = DEFAULT_INGEST_RATE
    #: machines sending ingest for this Organization at once (each paces at its share)
    ingest_machines: int = DEFAULT_INGEST_MACHINES
    #: how messages name the connection: ``"the m3ter connection 'm3ter_default'"`` by default,
    #: ``"this connection"`` when Airflow tests a form under a throwaway id
    label: str = ""

    def __post_init__(self) -> None:
        if not self.label:
            object.__setattr__(self, "label", connection_label(self.conn_id))

    @classmethod
    def from_connection_fields(
        cls,
        conn_id: str,
        *,
        login: str | None,
        password: str | None,
        host: str | None,
        port: int | None = None,
        schema: str | None = None,
        extra: Mapping[str, Any] | None = None,
        label: str | None = None,
    ) -> M3terSettings:
        """Validate a connection's fields; raise :class:`M3terConfigError` naming the connection and field.

        :param label: how messages name the connection (default ``"the m3ter connection '<conn_id>'"``);
            give ``"this connection"`` where the id is not one the user chose (a connection test).
        """
        extra = extra or {}
        label = label or connection_label(conn_id)

        def fail(field: str, problem: str) -> M3terConfigError:
            return M3terConfigError(f"{label}: {field} {problem}")

        def get_extra(name: str) -> Any:
            for key in (name, EXTRA_PREFIX + name):
                value = extra.get(key)
                if value is not None and value != "":
                    return value.strip() if isinstance(value, str) else value
            return None

        access_key_id = (login or "").strip()
        if not access_key_id:
            raise fail("login", "is empty: set it to the Service User's Access Key id.")
        if not password:
            raise fail("password", "is empty: set it to the Service User's Api Secret.")
        org_id = get_extra("org_id")
        if not org_id:
            raise fail("extra 'org_id'", "is missing: set it to your m3ter Organization id.")

        api_url = _join_host(label, host, port, schema) if host else DEFAULT_API_URL
        ingest_url = get_extra("ingest_url")
        ingest_url = (
            _check_url(label, "extra 'ingest_url'", ingest_url) if ingest_url else derive_ingest_url(api_url)
        )
        token_url = get_extra("token_url")
        token_url = (
            _check_url(label, "extra 'token_url'", token_url) if token_url else f"{api_url}/oauth/token"
        )
        console_url = get_extra("console_url")
        console_url = (
            _check_url(label, "extra 'console_url'", console_url) if console_url else DEFAULT_CONSOLE_URL
        )
        timeout = _number(label, "timeout", get_extra("timeout"), DEFAULT_TIMEOUT, float, minimum=0.001)
        max_retries = _number(label, "max_retries", get_extra("max_retries"), DEFAULT_MAX_RETRIES, int)
        raw_rate = get_extra("ingest_rate")
        ingest_rate = parse_ingest_rate(raw_rate)
        if ingest_rate is None:
            raise fail(
                "extra 'ingest_rate'",
                f"is {raw_rate!r}: give the Organization-wide ingest requests per second this Airflow "
                f"deployment may use, a number above 0 (default {DEFAULT_INGEST_RATE:g}: m3ter allows 50), "
                "or 0 or 'off' to turn pacing off.",
            )
        raw_machines = get_extra("ingest_machines")
        ingest_machines = parse_ingest_machines(raw_machines)
        if ingest_machines is None:
            raise fail(
                "extra 'ingest_machines'",
                f"is {raw_machines!r}: give how many machines send ingest for this Organization at once, "
                "a whole number of at least 1 (Celery: the worker count; Kubernetes executor: the "
                "ingest pool's slots).",
            )
        return cls(
            conn_id=conn_id,
            access_key_id=access_key_id,
            api_secret=password,
            org_id=str(org_id),
            api_url=api_url,
            ingest_url=ingest_url,
            token_url=token_url,
            console_url=console_url,
            timeout=timeout,
            max_retries=max_retries,
            ingest_rate=ingest_rate,
            ingest_machines=ingest_machines,
            label=label,
        )


def connection_label(conn_id: str) -> str:
    """How messages name a connection the user chose: ``"the m3ter connection 'm3ter_default'"``."""
    return f"the m3ter connection {conn_id!r}"


def derive_ingest_url(api_url: str) -> str:
    """``https://api.m3ter.com`` -> ``https://ingest.m3ter.com``; a URL without an ``api.`` label is kept.

    Host names are case-insensitive: ``https://API.m3ter.com`` gives ``https://ingest.m3ter.com``.
    """
    parts = urlsplit(api_url)
    host = parts.hostname or ""  # urlsplit lower-cases it
    if not host.startswith("api."):
        return api_url
    netloc = "ingest." + host[len("api.") :]
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


def _join_host(label: str, host: str, port: int | None, schema: str | None) -> str:
    """Join Airflow's split host and port back into a URL; a host without a scheme means https."""
    host = host.strip()
    if "://" not in host:
        host = f"https://{host}"
    _refuse_user_info(label, "host", host)
    parts = urlsplit(host)
    if port and parts.port is None and parts.hostname:
        netloc = f"{parts.netloc}:{int(port)}"
        host = urlunsplit(parts._replace(netloc=netloc))
    if schema and not parts.path.strip("/"):
        # the URI form puts a path after the host into ``schema``
        host = host.rstrip("/") + "/" + schema.strip("/")
    return _check_url(label, "host", host)


#: the user info of a URL (``user:secret@``), never echoed in a message
_USER_INFO = re.compile(r"(?<=//)[^/?#]*@")


def _refuse_user_info(label: str, field: str, url: str) -> None:
    if _USER_INFO.search(url) or ("@" in url and "://" not in url):
        raise M3terConfigError(
            f"{label}: {field} carries user info ('user:password@' before the host; not shown here): "
            "give the URL without it, e.g. https://api.m3ter.com. The Access Key id goes in login and "
            "the Api Secret in password."
        )


def _check_url(label: str, field: str, url: str) -> str:
    url = str(url).strip()
    _refuse_user_info(label, field, url)
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError as exc:
        raise M3terConfigError(f"{label}: {field} {url!r} is not a valid URL ({exc}).") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise M3terConfigError(
            f"{label}: {field} {url!r} is not a valid URL: give an http(s) URL such as https://api.m3ter.com."
        )
    if parts.query or parts.fragment or parts.username or parts.password:
        raise M3terConfigError(f"{label}: {field} {url!r} must not carry a query, fragment or credentials.")
    return url.rstrip("/")


def _number(label: str, name: str, value: Any, default: Any, kind: type, minimum: float = 0) -> Any:
    """A finite number of at least ``minimum`` ("nan", "inf", negatives and booleans are refused)."""
    if value is None:
        return default
    try:
        number = kind(value)
        if (
            isinstance(value, bool)
            or not math.isfinite(number)
            or number < minimum
            or (kind is int and float(value) != number)
        ):
            raise ValueError
    except (TypeError, ValueError, OverflowError):
        raise M3terConfigError(
            f"{label}: extra {name!r} is {value!r}; "
            f"give a finite {'whole ' if kind is int else ''}number of at least {minimum:g}."
        ) from None
    return number
