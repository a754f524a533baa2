"""Schemathesis against a live emulator, from m3ter's own spec: positive and negative cases.

``python -m tests.testing.fuzz [max_examples]`` runs a longer campaign and prints the figures.
"""

from __future__ import annotations

import json
import re
import sys
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field

import requests

from m3ter_provider.testing import M3terEmulator
from m3ter_provider.testing.spec import SPEC_FILE
from tests.testing.openapi import REQUIRED_QUIRKS

_CODE_CHAR = r"[^\s\x00-\x1f\x7f-\x9f]"
#: the spec's two Java-syntax patterns, in Python syntax, so schemathesis generates what they mean
#: (Java reads ``[^[\p{Cntrl}\s]]`` as "neither control nor whitespace"; Python as something else)
JAVA_PATTERNS = {
    r"^([^[\p{Cntrl}\s]])|([^[\p{Cntrl}\s]][[^[\p{Cntrl}\s]] ]*[^[\p{Cntrl}\s]])$": (
        rf"^(?:{_CODE_CHAR}|{_CODE_CHAR}(?:{_CODE_CHAR}| )*{_CODE_CHAR})$"
    ),
    r"^[\p{L}_$][\p{L}_$0-9]*$": r"^(?:[^\W\d]|\$)(?:[^\W\d]|[$0-9])*$",
}

#: path families the test fuzzes: regexes over the spec's path templates
FAMILIES = (
    r"^/organizations/\{orgId\}/accounts(/\{id\})?$",
    r"^/organizations/\{orgId\}/meters(/\{id\})?$",
    r"^/organizations/\{orgId\}/billjobs(/\{id\})?$",
    r"^/organizations/\{orgId\}/dataexports/(destinations|schedules|jobs)(/\{id\})?$",
    r"^/organizations/\{orgId\}/dataexports/adhoc$",
    r"^/organizations/\{orgId\}/measurements$",
    r"^/organizations/\{orgId\}/events(/\{id\})?$",
)


@dataclass
class Figures:
    """What one campaign saw."""

    responses: int = 0
    positive: int = 0
    negative: int = 0
    schema_checked: int = 0  # responses with a documented schema for their status
    schema_valid: int = 0
    negative_refused: int = 0
    statuses: Counter = field(default_factory=Counter)
    per_family: Counter = field(default_factory=Counter)  # responses per path family
    refused_positive: Counter = field(
        default_factory=Counter
    )  # "METHOD path: message" of valid cases refused
    failures: list[str] = field(default_factory=list)
    unsatisfiable: list[str] = field(default_factory=list)
    unrefusable: int = 0  # negative cases nothing can refuse (see ``refusable``), not counted
    seconds: float = 0.0

    def summary(self) -> str:
        def pct(part: int, whole: int) -> str:
            return f"{100 * part / whole:.1f}%" if whole else "n/a"

        return (
            f"{self.responses} responses in {self.seconds:.1f} s ({self.positive} positive, "
            f"{self.negative} negative cases); schema-valid {self.schema_valid}/{self.schema_checked} "
            f"({pct(self.schema_valid, self.schema_checked)}); invalid refused "
            f"{self.negative_refused}/{self.negative} ({pct(self.negative_refused, self.negative)}); "
            f"statuses {dict(sorted(self.statuses.items()))}"
        )


def run(emu: M3terEmulator, max_examples: int = 10, time_budget: float = 40.0, seed: int = 0) -> Figures:
    """Fuzz ``FAMILIES`` on ``emu`` (limits off: schemathesis sends at full speed); return the figures.

    Each family gets ``time_budget / len(FAMILIES)`` seconds: its operations are fuzzed in turn (valid
    cases, invalid ones, valid ones again on an entity that exists), ``max_examples`` each, until then.

    Every response with a documented schema for its status must match it; every negative case (a
    request the spec forbids) must be refused with a 4xx ``{"message"}``; nothing may answer 5xx.
    """
    import schemathesis
    from schemathesis import GenerationMode

    emu.set_limits(enabled=False)
    token = requests.post(
        f"{emu.url}/oauth/token",
        auth=(emu.access_key_id, emu.api_secret),
        data={"grant_type": "client_credentials"},
        timeout=5,
    ).json()["access_token"]
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token}"
    schema = schemathesis.openapi.from_dict(fuzzable_spec())
    existing = seed_entities(emu, session)
    figures = Figures()
    started = time.monotonic()
    for family in FAMILIES:  # each family gets an equal share of the time budget
        family_started = time.monotonic()
        for result in schema.include(path_regex=family).get_all_operations():
            operation = result.ok()
            passes = [(GenerationMode.POSITIVE, {}), (GenerationMode.NEGATIVE, {})]
            if operation.path in existing:  # once more with the id of an entity that exists
                passes.append((GenerationMode.POSITIVE, {"id": existing[operation.path]}))
            for mode, fixed in passes:
                if time.monotonic() - family_started > time_budget / len(FAMILIES):
                    break
                path_parameters = {"orgId": emu.org_id, **fixed}
                before = figures.responses
                _exercise(emu, session, operation, mode, path_parameters, figures, max_examples, seed)
                figures.per_family[family] += figures.responses - before
    figures.seconds = time.monotonic() - started
    return figures


def _exercise(
    emu, session, operation, mode, path_parameters: dict, figures: Figures, examples: int, seed: int
) -> None:
    """Send up to ``examples`` cases of one operation in one mode; record each answer."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import seed as hypothesis_seed
    from hypothesis.errors import Unsatisfiable

    strategy = operation.as_strategy(generation_mode=mode, path_parameters=path_parameters)

    @hypothesis_seed(seed)
    @settings(max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(case=strategy)
    def exercise(case) -> None:
        case.path_parameters.update(path_parameters)  # a negative case may have mutated them
        _record(figures, case, case.call(base_url=emu.url, session=session, timeout=10))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            exercise()
        except Unsatisfiable:  # nothing of this operation can be made invalid (only orgId)
            figures.unsatisfiable.append(f"{operation.label} ({mode.value})")


def fuzzable_spec() -> dict:
    """m3ter's spec as schemathesis should read it: Java patterns in Python syntax, and the one
    required field an Event cannot have before it is actioned (see ``REQUIRED_QUIRKS``) optional."""
    spec = python_patterns(json.loads(SPEC_FILE.read_text(encoding="utf-8")))
    for schema_name, field_name in REQUIRED_QUIRKS:
        schema = spec["components"]["schemas"][schema_name]
        schema["required"] = [name for name in schema.get("required", []) if name != field_name]
    return spec


def seed_entities(emu: M3terEmulator, session: requests.Session) -> dict[str, str]:
    """Create one entity of each fuzzed kind; return ``{path template: its id}``."""
    org = f"{emu.url}/organizations/{emu.org_id}"
    account = emu.seed("accounts", [{"code": "seed", "name": "Seed", "emailAddress": "seed@example.com"}])[0]
    meter = emu.seed("meters", [{"code": "seed", "name": "Seed", "dataFields": [], "derivedFields": []}])[0]
    destination = emu.seed("dataexports/destinations", [{
        "destinationType": "S3", "code": "seed", "name": "Seed", "bucketName": "seed",
        "iamRoleArn": "arn:aws:iam::123456789012:role/seed", "partitionOrder": "TIME_FIRST",
    }])[0]  # fmt: skip
    schedule = emu.seed("dataexports/schedules", [{
        "sourceType": "OPERATIONAL", "code": "seed", "name": "Seed", "operationalDataTypes": ["BILLS"],
        "scheduleType": "DAY", "period": 1,
    }])[0]  # fmt: skip
    emu.job_duration = 0
    bill_job = session.post(f"{org}/billjobs", json={}, timeout=10).json()["id"]
    export = session.post(
        f"{org}/dataexports/adhoc",
        json={"sourceType": "OPERATIONAL", "operationalDataTypes": ["ACCOUNTS"], "exportFileFormat": "CSV"},
        timeout=10,
    ).json()["jobId"]
    event = session.get(f"{org}/events", timeout=10).json()["data"][0]["id"]
    prefix = "/organizations/{orgId}"
    return {
        f"{prefix}/accounts/{{id}}": account["id"],
        f"{prefix}/meters/{{id}}": meter["id"],
        f"{prefix}/dataexports/destinations/{{id}}": destination["id"],
        f"{prefix}/dataexports/schedules/{{id}}": schedule["id"],
        f"{prefix}/billjobs/{{id}}": bill_job,
        f"{prefix}/dataexports/jobs/{{id}}": export,
        f"{prefix}/events/{{id}}": event,
    }


def python_patterns(node: object) -> object:
    """The spec with its Java-syntax patterns translated (see ``JAVA_PATTERNS``) and every pattern
    anchored (in place): m3ter's Java checks a whole value (``HOUR|DAY|MINUTE`` refuses "xxDAYxx"),
    where JSON Schema would search in it."""
    if isinstance(node, dict):
        if isinstance(node.get("pattern"), str):
            pattern = JAVA_PATTERNS.get(node["pattern"], node["pattern"])
            node["pattern"] = (
                pattern if pattern.startswith("^") and pattern.endswith("$") else f"^(?:{pattern})$"
            )
        for value in node.values():
            python_patterns(value)
    elif isinstance(node, list):
        for value in node:
            python_patterns(value)
    return node


def refusable(case) -> bool:
    """False for a negative case whose only invalid parts are query parameters nothing can refuse once
    sent: a string, or an array of strings (``?productId=-2.79e-259`` is a valid productId), or an
    empty value where the spec says ``allowEmptyValue`` (``?status=`` means no status filter)."""
    data = case.meta.phase.data
    negated = [
        str(getattr(location, "value", location))
        for location, info in case.meta.components.items()
        if not info.mode.is_positive
    ]
    if negated != ["query"]:
        return True
    names = (
        [data.parameter]
        if getattr(data, "parameter", None)
        else re.findall(r"`([^`]+)`", data.description or "")
    )
    params = {
        p.get("name"): p
        for p in case.operation.definition.raw.get("parameters", [])
        if p.get("in") == "query"
    }
    query = case.query or {}
    # the parameters named (a description may also quote other words), else every parameter sent
    names = [name for name in names if name in params] or [name for name in query if name in params]
    if not names:
        return True
    return not all(
        _stringly(params[name].get("schema", {}))
        or (params[name].get("allowEmptyValue") and query.get(name) in (None, "", [], [""]))
        for name in names
    )


def _stringly(schema: dict) -> bool:
    if schema.get("type") == "array":
        schema = schema.get("items", {})
    return schema.get("type") == "string" and not (
        {"enum", "pattern", "format", "minLength", "maxLength"} & set(schema)
    )


def _record(figures: Figures, case, response) -> None:
    from schemathesis.core.failures import FailureGroup
    from schemathesis.specs.openapi.checks import negative_data_rejection, response_schema_conformance

    mode = case.meta.generation.mode
    label = f"{case.method} {case.path} ({mode.value})"
    figures.responses += 1
    figures.statuses[response.status_code] += 1
    negative = not mode.is_positive
    if negative and not refusable(case):
        figures.unrefusable += 1
        return
    figures.negative += negative
    figures.positive += not negative
    if response.status_code >= 500:
        figures.failures.append(f"{label}: {response.status_code} {response.text[:200]}")
        return
    if response.status_code >= 400:
        body = _json(response)
        if not negative and isinstance(body, dict):
            figures.refused_positive[f"{case.method} {case.path}: {str(body.get('message'))[:90]}"] += 1
        if not (isinstance(body, dict) and isinstance(body.get("message"), str)):
            figures.failures.append(
                f"{label}: {response.status_code} without a message: {response.text[:200]}"
            )
    if str(response.status_code) in case.operation.definition.raw.get("responses", {}):
        figures.schema_checked += 1
        try:
            case.validate_response(response, checks=[response_schema_conformance])
            figures.schema_valid += 1
        except FailureGroup as error:  # schemathesis raises a FailureGroup naming the mismatch
            figures.failures.append(f"{label}: response does not match the spec: {_brief(error)}")
    if negative:
        try:
            case.validate_response(response, checks=[negative_data_rejection])
            figures.negative_refused += 1
        except FailureGroup as error:
            figures.failures.append(
                f"{label}: invalid request accepted ({response.status_code}): {_brief(error)}"
            )


def _brief(error: BaseException) -> str:
    """A schemathesis failure in a few lines: what failed, and the curl line that reproduces it."""
    text = str(error)
    curl = re.search(r"curl .*", text)
    return f"{text[:300]} ... {curl.group(0) if curl else ''}"


def _json(response) -> object:
    try:
        return response.json()
    except ValueError:
        return None


if __name__ == "__main__":
    examples = int(sys.argv[1]) if len(sys.argv) > 1 else 100
    with M3terEmulator(job_duration=0.1) as emulator:
        result = run(emulator, max_examples=examples, time_budget=float("inf"))
    print(result.summary())
    for failure in result.failures[:40]:
        print("-", failure)
    print("valid (positive) cases refused, most common first:")
    for reason, count in result.refused_positive.most_common(40):
        print(f"  {count:5d}  {reason}")
