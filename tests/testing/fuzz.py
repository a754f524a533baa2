"""Schemathesis against a live emulator, from m3ter's own spec: positive and negative cases.

``python -m tests.testing.fuzz [max_examples]`` runs a longer campaign and prints the figures.
"""

from __future__ import annotations

import json
import sys
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field

import requests

from m3ter_provider.testing import M3terEmulator
from m3ter_provider.testing.spec import SPEC_FILE

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

    Every response with a documented schema for its status must match it; every negative case (a
    request the spec forbids) must be refused with a 4xx ``{"message"}``; nothing may answer 5xx.
    """
    import schemathesis
    from hypothesis import HealthCheck, given, seed as hypothesis_seed, settings
    from hypothesis.errors import Unsatisfiable
    from schemathesis import GenerationMode
    from schemathesis.specs.openapi.checks import negative_data_rejection, response_schema_conformance

    emu.set_limits(enabled=False)
    token = requests.post(
        f"{emu.url}/oauth/token",
        auth=(emu.access_key_id, emu.api_secret),
        data={"grant_type": "client_credentials"},
        timeout=5,
    ).json()["access_token"]
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token}"
    schema = schemathesis.openapi.from_dict(
        python_patterns(json.loads(SPEC_FILE.read_text(encoding="utf-8")))
    )
    figures = Figures()
    started = time.monotonic()
    for family in FAMILIES:
        for result in schema.include(path_regex=family).get_all_operations():
            operation = result.ok()
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                if time.monotonic() - started > time_budget:
                    figures.seconds = time.monotonic() - started
                    return figures
                strategy = operation.as_strategy(generation_mode=mode, path_parameters={"orgId": emu.org_id})

                @hypothesis_seed(seed)
                @settings(
                    max_examples=max_examples,
                    deadline=None,
                    database=None,
                    derandomize=False,
                    suppress_health_check=list(HealthCheck),
                )
                @given(case=strategy)
                def exercise(case) -> None:
                    case.path_parameters["orgId"] = emu.org_id  # a negative case may have mutated it
                    response = case.call(base_url=emu.url, session=session, timeout=10)
                    _record(figures, case, response, response_schema_conformance, negative_data_rejection)

                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    try:
                        exercise()
                    except Unsatisfiable:  # nothing of this operation can be made invalid (only orgId)
                        figures.unsatisfiable.append(f"{operation.label} ({mode.value})")
    figures.seconds = time.monotonic() - started
    return figures


def python_patterns(node: object) -> object:
    """The spec with its Java-syntax patterns translated (in place); see ``JAVA_PATTERNS``."""
    if isinstance(node, dict):
        if isinstance(node.get("pattern"), str) and node["pattern"] in JAVA_PATTERNS:
            node["pattern"] = JAVA_PATTERNS[node["pattern"]]
        for value in node.values():
            python_patterns(value)
    elif isinstance(node, list):
        for value in node:
            python_patterns(value)
    return node


def refusable(case) -> bool:
    """False for a negative case whose only invalid part is a query parameter that any text satisfies
    once sent (a string, or an array of strings: ``?productId=-2.79e-259`` is a valid productId)."""
    data = case.meta.phase.data
    name, location = getattr(data, "parameter", None), getattr(data, "parameter_location", None)
    negated = [
        str(getattr(loc, "value", loc))
        for loc, info in case.meta.components.items()
        if not info.mode.is_positive
    ]
    if negated != ["query"]:
        return True
    params = [p for p in case.operation.definition.raw.get("parameters", []) if p.get("in") == "query"]
    if name is not None:
        params = [p for p in params if p.get("name") == name]
    return not all(_stringly(p.get("schema", {})) for p in params)


def _stringly(schema: dict) -> bool:
    if schema.get("type") == "array":
        schema = schema.get("items", {})
    return schema.get("type") == "string" and not (
        {"enum", "pattern", "format", "minLength", "maxLength"} & set(schema)
    )


def _record(figures: Figures, case, response, schema_check, negative_check) -> None:
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
            case.validate_response(response, checks=[schema_check])
            figures.schema_valid += 1
        except BaseExceptionGroup as error:  # schemathesis raises a FailureGroup naming the mismatch
            figures.failures.append(f"{label}: response does not match the spec: {str(error)[:400]}")
    if negative:
        try:
            case.validate_response(response, checks=[negative_check])
            figures.negative_refused += 1
        except BaseExceptionGroup as error:
            figures.failures.append(
                f"{label}: invalid request accepted ({response.status_code}): {str(error)[:400]}"
            )


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
