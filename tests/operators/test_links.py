"""M3terConsoleLink and the provider-info entries of the Airflow-facing classes."""

from __future__ import annotations

import dataclasses
import importlib

import pytest

from m3ter_provider import get_provider_info, links
from m3ter_provider.core import jobs
from m3ter_provider.links import CONSOLE_LINK_XCOM_KEY, M3terConsoleLink, console_link
from m3ter_provider.operators.m3ter import (
    M3terBillJobOperator,
    M3terDataExportOperator,
    M3terOperator,
    M3terSubmitMeasurementsOperator,
)
from m3ter_provider.sensors.m3ter import M3terJobSensor


def test_the_link_opens_the_connections_console():
    assert console_link("https://console.m3ter.com") == "https://console.m3ter.com/"
    assert (
        console_link("https://console.dev.m3ter.com/", "billjob", "j-1") == "https://console.dev.m3ter.com/"
    )


def test_a_known_console_page_for_a_job_kind_is_used(monkeypatch):
    with_page = dataclasses.replace(jobs.BILL_JOB, console_path="billing/jobs/{job_id}")
    monkeypatch.setitem(jobs.JOB_KINDS, "billjob", with_page)
    assert (
        console_link("https://console.m3ter.com", "billjob", "j-1")
        == "https://console.m3ter.com/billing/jobs/j-1"
    )


def test_get_link_reads_what_the_task_stored(monkeypatch):
    stored = {}

    def get_value(*, ti_key, key):
        return stored.get((ti_key, key))

    monkeypatch.setattr(links.XCom, "get_value", staticmethod(get_value))
    link = M3terConsoleLink()
    assert link.name == "m3ter Console"
    assert link.get_link(None, ti_key="ti-1") == ""  # the task has not run: no link
    stored[("ti-1", CONSOLE_LINK_XCOM_KEY)] = "https://console.m3ter.com/"
    assert link.get_link(None, ti_key="ti-1") == "https://console.m3ter.com/"


@pytest.mark.parametrize(
    "cls",
    [
        M3terOperator,
        M3terSubmitMeasurementsOperator,
        M3terDataExportOperator,
        M3terBillJobOperator,
        M3terJobSensor,
    ],
)
def test_every_operator_offers_the_link(cls):
    assert any(isinstance(link, M3terConsoleLink) for link in cls.operator_extra_links)


def test_provider_info_names_importable_modules_and_link():
    info = get_provider_info()
    for section in ("operators", "sensors", "triggers"):
        for entry in info[section]:
            assert entry["integration-name"] == "m3ter"
            for module in entry["python-modules"]:
                importlib.import_module(module)
    for path in info["extra-links"]:
        module, _, name = path.rpartition(".")
        assert getattr(importlib.import_module(module), name) is M3terConsoleLink
