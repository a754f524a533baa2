"""M3terOperator: any endpoint, templated, paginated, filtered; JSON-serialisable results in XCom."""

from __future__ import annotations

import json

import pytest

from m3ter_provider.errors import M3terAPIError, M3terConfigError
from m3ter_provider.links import CONSOLE_LINK_XCOM_KEY
from m3ter_provider.operators.m3ter import M3terOperator
from tests.operators.helpers import make_context


def account(code: str) -> dict:
    return {"code": code, "name": code.title(), "emailAddress": f"{code}@example.com"}


def test_post_then_get_returns_m3ters_json(emu):
    created = M3terOperator(task_id="create", method="POST", endpoint="accounts", json=account("acme"))
    result = created.execute(make_context(created))
    assert result["code"] == "acme" and result["id"]

    read = M3terOperator(task_id="read", endpoint=f"accounts/{result['id']}")
    context = make_context(read)
    assert read.execute(context)["code"] == "acme"
    assert context["ti"].xcom[CONSOLE_LINK_XCOM_KEY] == "https://console.m3ter.com/"


def test_paginate_collects_every_page(emu):
    emu.seed("accounts", [account(f"acct{i:02d}") for i in range(23)])
    op = M3terOperator(task_id="list", endpoint="accounts", paginate=True, page_size=10)
    result = op.execute(make_context(op))
    assert sorted(a["code"] for a in result) == [f"acct{i:02d}" for i in range(23)]
    assert emu.stats()["requests"]["GET /organizations/{orgId}/accounts"] == 3


def test_response_filter_shapes_the_xcom(emu):
    emu.seed("accounts", [account("a1"), account("a2")])
    op = M3terOperator(
        task_id="codes",
        endpoint="accounts",
        paginate=True,
        response_filter=lambda accounts: sorted(a["code"] for a in accounts),
    )
    assert op.execute(make_context(op)) == ["a1", "a2"]


def test_a_filter_returning_something_xcom_cannot_hold_fails_clearly(emu):
    op = M3terOperator(task_id="bad", endpoint="organizationconfig", response_filter=lambda org: {object()})
    with pytest.raises(M3terConfigError, match=r"not JSON-serialisable.*response_filter"):
        op.execute(make_context(op))


def test_endpoint_query_params_and_body_are_templated(emu):
    emu.seed("accounts", [account("tpl-1"), account("tpl-2")])
    op = M3terOperator(
        task_id="tpl",
        endpoint="{{ params.collection }}",
        query_params={"codes": "{{ params.code }}"},
        json=None,
        params={"collection": "accounts", "code": "tpl-2"},
    )
    context = make_context(op, params={"collection": "accounts", "code": "tpl-2"})
    op.render_template_fields(context)
    assert (op.endpoint, op.query_params) == ("accounts", {"codes": "tpl-2"})
    assert [a["code"] for a in op.execute(context)["data"]] == ["tpl-2"]

    create = M3terOperator(
        task_id="tpl_body",
        method="POST",
        endpoint="accounts",
        data={"code": "{{ run_id }}", "name": "n", "emailAddress": "x@example.com"},
    )
    context = make_context(create, run_id="run-42")
    create.render_template_fields(context)
    assert create.execute(context)["code"] == "run-42"


def test_query_params_rendered_from_an_xcom_string(emu):
    emu.seed("accounts", [account("x1"), account("x2")])
    op = M3terOperator(task_id="q", endpoint="accounts", query_params=json.dumps({"codes": ["x1"]}))
    assert [a["code"] for a in op.execute(make_context(op))["data"]] == ["x1"]


def test_m3ter_errors_reach_the_task_with_path_and_message(emu):
    op = M3terOperator(task_id="missing", endpoint="accounts/does-not-exist")
    with pytest.raises(M3terAPIError, match=r"GET /organizations/.*/accounts/does-not-exist.*404"):
        op.execute(make_context(op))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"endpoint": "accounts", "method": "FETCH"}, "method 'FETCH'"),
        ({"endpoint": "accounts", "method": "POST", "paginate": True}, "paginate=True needs method='GET'"),
        ({"endpoint": "accounts", "json": {}, "data": {}}, "json or as data, not both"),
        ({"endpoint": ""}, "endpoint is required"),
        ({"endpoint": "accounts", "response_filter": "codes"}, "response_filter must be a callable"),
    ],
)
def test_bad_arguments_fail_when_the_dag_is_parsed(kwargs, message):
    with pytest.raises(M3terConfigError, match=message):
        M3terOperator(task_id="t", **kwargs)
