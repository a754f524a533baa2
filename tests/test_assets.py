"""The m3ter:// asset URI scheme: parsing, normalisation, errors, and Airflow's use of the registration."""

from __future__ import annotations

import pytest
from airflow.providers.common.compat.sdk import Asset
from airflow.providers.common.compat.version_compat import AIRFLOW_V_3_0_PLUS

from m3ter_provider import assets, get_provider_info
from m3ter_provider.errors import M3terConfigError


@pytest.mark.parametrize(
    ("uri", "org_id", "kind", "name"),
    [
        ("m3ter://org-1/meters/api_calls", "org-1", "meters", "api_calls"),
        ("m3ter://org-1/meters/api%20calls", "org-1", "meters", "api calls"),
        ("M3TER://org-1/Meters/api_calls/", "org-1", "meters", "api_calls"),
        ("m3ter://org-1/bills", "org-1", "bills", None),
        ("m3ter://org-1/exports/usage", "org-1", "exports", "usage"),
        ("m3ter://org-1/statements", "org-1", "statements", None),
        ("m3ter://org-1/accounts/", "org-1", "accounts", None),
    ],
)
def test_parse_uri_reads_every_form(uri, org_id, kind, name):
    parsed = assets.parse_uri(uri)
    assert (parsed.org_id, parsed.kind, parsed.name) == (org_id, kind, name)


@pytest.mark.parametrize(
    ("uri", "says"),
    [
        ("m3ter:///meters/x", "Organization id is missing"),
        ("m3ter://org", "path is missing"),
        ("m3ter://org/invoices", "'invoices' is not one of"),
        ("m3ter://org/meters", "Meter code is missing"),
        ("m3ter://org/meters/", "Meter code is missing"),
        ("m3ter://org/exports", "export schedule id or kind is missing"),
        ("m3ter://org/meters/a/b", "exactly one name"),
        ("m3ter://org/bills/123", "bills takes no name"),
        ("m3ter://org/bills?x=1", "query or fragment"),
        ("m3ter://user@org/bills", "user info"),
        ("m3ter://org:80/bills", "user info and ports"),
        ("s3://org/bills", "scheme is 's3'"),
    ],
)
def test_a_malformed_uri_is_a_config_error_naming_the_problem(uri, says):
    with pytest.raises(M3terConfigError, match="m3ter asset URI") as info:
        assets.parse_uri(uri)
    assert says in str(info.value)
    assert "m3ter://<org id>/meters/<meter code>" in str(info.value)  # the fix: the forms to use
    assert isinstance(info.value, ValueError)  # what Airflow's URI handlers raise


def test_helpers_build_normalised_assets():
    assert assets.meter_asset("org", "api calls").uri == "m3ter://org/meters/api%20calls"
    assert assets.meter_asset("org", "a/b").uri == "m3ter://org/meters/a%2Fb"
    assert assets.bills_asset("org").uri == "m3ter://org/bills"
    assert assets.export_asset("org", "sched-1").uri == "m3ter://org/exports/sched-1"
    assert assets.statements_asset("org").uri == "m3ter://org/statements"
    assert assets.accounts_asset("org").uri == "m3ter://org/accounts"
    assert assets.parse_uri(assets.meter_asset("org", "a/b").uri).name == "a/b"  # round trip


@pytest.mark.parametrize(
    ("call", "says"),
    [
        (lambda: assets.meter_asset("", "x"), "Organization id is missing"),
        (lambda: assets.meter_asset("org/1", "x"), "is not an Organization id"),
        (lambda: assets.meter_asset("org", ""), "Meter code is missing"),
        (lambda: assets.create_asset(org_id="org", kind="invoices"), "not one of"),
        (lambda: assets.create_asset(org_id="org", kind="bills", name="x"), "takes no name"),
    ],
)
def test_helpers_refuse_bad_parts(call, says):
    with pytest.raises(M3terConfigError, match=says):
        call()


def test_provider_info_registers_the_scheme_for_assets_and_datasets():
    info = get_provider_info()
    for key in ("asset-uris", "dataset-uris"):
        (entry,) = info[key]
        assert entry["schemes"] == ["m3ter"]
        assert entry["handler"] == "m3ter_provider.assets.sanitize_uri"


@pytest.mark.skipif(not AIRFLOW_V_3_0_PLUS, reason="Airflow 2.11's Dataset calls no URI handler of ours")
def test_airflow_normalises_and_refuses_m3ter_uris_through_the_registration():
    """Airflow itself (not our helper) calls the handler when an Asset is built in a DAG file."""
    asset = Asset("M3TER://org/METERS/api%20calls/")
    assert asset.uri == "m3ter://org/meters/api%20calls"
    with pytest.raises(ValueError, match="'invoices' is not one of"):
        Asset("m3ter://org/invoices")


def test_openlineage_converter_names_the_dataset_by_organization_and_path():
    from airflow.providers.openlineage.utils.utils import translate_airflow_asset  # noqa: F401

    dataset = assets.convert_asset_to_openlineage(assets.meter_asset("org", "api_calls"), None)
    assert (dataset.namespace, dataset.name) == ("m3ter://org", "meters/api_calls")


def test_openlineage_provider_uses_our_converter():
    from airflow.providers.openlineage.utils.utils import translate_airflow_asset

    dataset = translate_airflow_asset(assets.bills_asset("org"), lineage_context=None)
    assert dataset is not None
    assert (dataset.namespace, dataset.name) == ("m3ter://org", "bills")
