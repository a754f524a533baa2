"""The ``m3ter://`` asset URI scheme: m3ter data as Airflow assets (datasets on Airflow 2.11).

One asset per thing m3ter holds that a DAG can produce or wait for:

==========================================  =====================================================
URI                                         what it stands for
==========================================  =====================================================
``m3ter://<org id>/meters/<meter code>``    usage (measurements) of one Meter
``m3ter://<org id>/bills``                  the Organization's bills (a bill job ran)
``m3ter://<org id>/exports/<name>``         a data export: a schedule id, or a kind (``usage``,
                                            ``operational``)
``m3ter://<org id>/statements``             the Organization's statements
``m3ter://<org id>/accounts``               the Organization's Accounts
==========================================  =====================================================

The provider registers the scheme (``asset-uris`` in its provider info), so Airflow checks and
normalises every ``m3ter://`` URI when the DAG file is parsed: a malformed one raises
:class:`~m3ter_provider.errors.M3terConfigError` (a ``ValueError``) naming what is wrong and the
form to use. The kind is lower-cased, a trailing ``/`` dropped, a code percent-encoded the same
way whatever the caller gave, so ``meter_asset("org", "api calls")`` and
``Asset("m3ter://org/meters/api%20calls")`` are one asset.

A light module: DAG files import it. It imports Airflow's ``Asset`` (``Dataset`` on 2.11) through
``airflow.providers.common.compat.sdk`` only when an asset is built.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any
from urllib.parse import SplitResult, quote, unquote, urlsplit, urlunsplit

from m3ter_provider.errors import M3terConfigError

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Asset

SCHEME = "m3ter"
#: kinds whose URI ends with a name (``meters/<code>``, ``exports/<name>``)
NAMED_KINDS = ("meters", "exports")
#: kinds that stand for a whole collection of the Organization
COLLECTION_KINDS = ("bills", "statements", "accounts")
KINDS = NAMED_KINDS + COLLECTION_KINDS
#: the longest m3ter code (a Meter code is at most 80 characters)
MAX_NAME = 200

_FORMS = (
    "m3ter://<org id>/meters/<meter code>, m3ter://<org id>/bills, m3ter://<org id>/exports/<schedule "
    "or kind>, m3ter://<org id>/statements or m3ter://<org id>/accounts"
)


@dataclasses.dataclass(frozen=True)
class M3terAssetURI:
    """A parsed ``m3ter://`` URI.

    :param org_id: the m3ter Organization id.
    :param kind: ``meters``, ``exports``, ``bills``, ``statements`` or ``accounts``.
    :param name: the Meter code or export name (``None`` for a collection kind).
    """

    org_id: str
    kind: str
    name: str | None = None

    @property
    def uri(self) -> str:
        """The normalised URI."""
        path = f"/{self.kind}" if self.name is None else f"/{self.kind}/{quote(self.name, safe='')}"
        return urlunsplit((SCHEME, self.org_id, path, "", ""))

    @property
    def path(self) -> str:
        """``<kind>`` or ``<kind>/<name>`` (the URI without scheme and Organization)."""
        return self.kind if self.name is None else f"{self.kind}/{self.name}"


def _fail(uri: str, problem: str) -> M3terConfigError:
    return M3terConfigError(f"m3ter asset URI {uri!r}: {problem}. Use {_FORMS}.")


def _check_org(org_id: Any, uri: str) -> str:
    text = str(org_id or "").strip()
    if not text:
        raise _fail(uri, "the Organization id is missing")
    if any(c in text for c in "/@:?#% ") or not text.isprintable():
        raise _fail(uri, f"{text!r} is not an Organization id")
    return text


def _check_name(name: Any, kind: str, uri: str) -> str:
    text = str(name or "")
    if not text.strip():
        what = "Meter code" if kind == "meters" else "export schedule id or kind"
        raise _fail(uri, f"the {what} is missing after {kind}/")
    if len(text) > MAX_NAME or not text.isprintable():
        raise _fail(
            uri, f"{text[:40]!r} is not a valid {kind} name (printable, at most {MAX_NAME} characters)"
        )
    return text


def parse_uri(uri: str | SplitResult) -> M3terAssetURI:
    """Parse and check an ``m3ter://`` URI.

    :raises M3terConfigError: the URI is not one of the forms above (the message says which part).
    """
    parts = uri if isinstance(uri, SplitResult) else urlsplit(str(uri))
    text = urlunsplit(parts)
    if parts.scheme.lower() != SCHEME:
        raise _fail(text, f"the scheme is {parts.scheme!r}, not {SCHEME!r}")
    if parts.query or parts.fragment:
        raise _fail(text, "a query or fragment has no meaning here")
    if "@" in parts.netloc or parts.port is not None:
        raise _fail(text, "user info and ports have no meaning here: the authority is the Organization id")
    org_id = _check_org(parts.netloc, text)
    segments = [unquote(s) for s in parts.path.strip("/").split("/")] if parts.path.strip("/") else []
    if not segments:
        raise _fail(text, "the path is missing")
    kind = segments[0].lower()
    if kind not in KINDS:
        raise _fail(text, f"{segments[0]!r} is not one of {', '.join(KINDS)}")
    if kind in COLLECTION_KINDS:
        if len(segments) != 1:
            raise _fail(text, f"{kind} takes no name after it")
        return M3terAssetURI(org_id, kind)
    if len(segments) > 2:
        raise _fail(text, f"{kind} takes exactly one name after it (percent-encode a '/' in it)")
    name = segments[1] if len(segments) == 2 else None
    return M3terAssetURI(org_id, kind, _check_name(name, kind, text))


def sanitize_uri(parts: SplitResult) -> SplitResult:
    """Airflow's URI handler for ``m3ter://``: check and normalise (``asset-uris`` ``handler``).

    :raises M3terConfigError: a malformed URI (a ``ValueError``, as Airflow expects).
    """
    return urlsplit(parse_uri(parts).uri)


def m3ter_uri(org_id: str, kind: str, name: str | None = None) -> str:
    """The normalised URI of an m3ter asset (checked like any ``m3ter://`` URI)."""
    kind_text = str(kind or "").strip().lower()
    uri = f"m3ter://{org_id}/{kind_text}" + ("" if name is None else f"/{name}")
    org = _check_org(org_id, uri)
    if kind_text not in KINDS:
        raise _fail(uri, f"{kind!r} is not one of {', '.join(KINDS)}")
    if kind_text in COLLECTION_KINDS:
        if name is not None:
            raise _fail(uri, f"{kind_text} takes no name")
        return M3terAssetURI(org, kind_text).uri
    return M3terAssetURI(org, kind_text, _check_name(name, kind_text, uri)).uri


def create_asset(
    *, org_id: str, kind: str, name: str | None = None, extra: dict[str, Any] | None = None
) -> Asset:
    """An m3ter asset (``Dataset`` on Airflow 2.11); the ``asset-uris`` ``factory``.

    :param org_id: the m3ter Organization id.
    :param kind: ``meters``, ``exports``, ``bills``, ``statements`` or ``accounts``.
    :param name: the Meter code or export name (only for ``meters`` and ``exports``).
    :param extra: the asset's ``extra``.
    """
    from airflow.providers.common.compat.sdk import Asset

    uri = m3ter_uri(org_id, kind, name)
    return Asset(uri=uri, extra=extra) if extra else Asset(uri=uri)


def meter_asset(org_id: str, code: str) -> Asset:
    """Usage of one Meter: ``m3ter://<org id>/meters/<meter code>``."""
    return create_asset(org_id=org_id, kind="meters", name=code)


def bills_asset(org_id: str) -> Asset:
    """The Organization's bills: ``m3ter://<org id>/bills``."""
    return create_asset(org_id=org_id, kind="bills")


def export_asset(org_id: str, name: str) -> Asset:
    """A data export: ``m3ter://<org id>/exports/<schedule id or kind>`` (``usage``, ``operational``)."""
    return create_asset(org_id=org_id, kind="exports", name=name)


def statements_asset(org_id: str) -> Asset:
    """The Organization's statements: ``m3ter://<org id>/statements``."""
    return create_asset(org_id=org_id, kind="statements")


def accounts_asset(org_id: str) -> Asset:
    """The Organization's Accounts: ``m3ter://<org id>/accounts``."""
    return create_asset(org_id=org_id, kind="accounts")


def convert_asset_to_openlineage(asset: Any, lineage_context: Any = None) -> Any:
    """An m3ter asset as an OpenLineage dataset (``asset-uris`` ``to_openlineage_converter``).

    Namespace ``m3ter://<org id>``, name ``<kind>`` or ``<kind>/<name>`` (e.g. ``meters/api_calls``).
    """
    from airflow.providers.common.compat.openlineage.facet import Dataset

    parsed = parse_uri(asset.uri)
    return Dataset(namespace=f"{SCHEME}://{parsed.org_id}", name=parsed.path)


__all__ = [
    "KINDS",
    "SCHEME",
    "M3terAssetURI",
    "accounts_asset",
    "bills_asset",
    "convert_asset_to_openlineage",
    "create_asset",
    "export_asset",
    "m3ter_uri",
    "meter_asset",
    "parse_uri",
    "sanitize_uri",
    "statements_asset",
]
