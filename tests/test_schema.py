"""Fuzzing through gunicorn, over every operation in /api/openapi.json.

- schemathesis, positive mode: valid requests; no 5xx, every answer conforms to the schema.
- schemathesis, negative mode: requests that break the schema; no 5xx, errors are JSON.
- hypothesis, hostile: every method on every path (and unknown ones), bodies that are not strict
  JSON (lone surrogates, huge exponents, NaN, deep nesting, huge integers, invalid UTF-8), wrong
  content types, chunked bodies, non-ASCII digits in headers and path parameters.

Together at least MIN_POSITIVE + MIN_NEGATIVE + MIN_HOSTILE = 5,000 requests; not one 5xx, not
one error under /api/ that is not `{"error": {"code", "message"}}`.
"""

import json
import os
from collections import Counter
from urllib.parse import quote

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.generation import GenerationMode

pytestmark = pytest.mark.processes

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
EXAMPLES_PER_OPERATION = 60
NEGATIVE_EXAMPLES_PER_OPERATION = 30
HOSTILE_EXAMPLES = 3800
MIN_POSITIVE = 800
MIN_NEGATIVE = 400
MIN_HOSTILE = 3800
# CI replays one fixed exploration (a red build must be reproducible); local runs explore new
# inputs every time.
DERANDOMIZE = bool(os.environ.get("CI"))


def seed_runs(server, session: requests.Session, auth: dict[str, str]) -> list[str]:
    real_runs = [
        session.post(f"{server.base}/api/v1/runs", json={}, headers=auth, timeout=10).json()["id"]
        for _ in range(3)
    ]
    for run_id in real_runs:
        session.post(
            f"{server.base}/api/v1/runs/{run_id}/tool-calls",
            json={"name": "seed"},
            headers=auth,
            timeout=10,
        )
    return real_runs


def assert_json_error_shape(response, method: str) -> None:
    """Under /api/, an error is `{"error": {"code", "message"}}` (HEAD: the headers say JSON).

    `response` is a `requests.Response` or schemathesis' own (headers as lists, lower-cased).
    """
    # Some answers are files (archives, artifacts, exports): never assume text.
    body = response.content[:300].decode("utf-8", "replace")
    where = f"{method} {response.request.url} -> {response.status_code}: {body}"
    assert response.status_code < 500, where
    if response.status_code < 400:
        return
    content_type = response.headers.get("Content-Type") or response.headers.get("content-type")
    if isinstance(content_type, list):
        content_type = content_type[0]
    assert (content_type or "").startswith("application/json"), where
    if method == "HEAD":
        assert not response.content, where
        return
    error = json.loads(response.content)["error"]
    assert isinstance(error["code"], str) and error["code"], where
    assert isinstance(error["message"], str) and error["message"], where


def test_generated_requests_get_no_5xx_and_conform_to_the_schema(server):
    schema = schemathesis.openapi.from_url(f"{server.base}/api/openapi.json")
    session = requests.Session()
    auth = {"Authorization": f"Bearer {server.keys['fuzz']}"}
    real_runs = seed_runs(server, session, auth)
    sent: Counter[str] = Counter()
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 14

    for operation in operations:

        @given(case=operation.as_strategy(), real=st.sampled_from([None, *real_runs]))
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            derandomize=DERANDOMIZE,
            deadline=None,
            database=None,
            phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        def exercise(case, real):
            if real is not None and case.path_parameters and "run_id" in case.path_parameters:
                case.path_parameters["run_id"] = real  # reach real run databases too
            case.call_and_validate(
                base_url=server.base, session=session, headers=auth, checks=CHECKS, timeout=15
            )
            sent[case.operation.label] += 1

        exercise()

    assert sum(sent.values()) >= MIN_POSITIVE, sent
    assert len(sent) == len(operations)


def test_schema_breaking_requests_get_json_4xx_never_5xx(server):
    schema = schemathesis.openapi.from_url(f"{server.base}/api/openapi.json")
    session = requests.Session()
    auth = {"Authorization": f"Bearer {server.keys['fuzz']}"}
    real_runs = seed_runs(server, session, auth)
    sent: Counter[str] = Counter()
    operations = [result.ok() for result in schema.get_all_operations()]

    for operation in operations:

        @given(
            case=operation.as_strategy(generation_mode=GenerationMode.NEGATIVE),
            real=st.sampled_from([None, *real_runs]),
        )
        @settings(
            max_examples=NEGATIVE_EXAMPLES_PER_OPERATION,
            derandomize=DERANDOMIZE,
            deadline=None,
            database=None,
            phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        def exercise(case, real):
            if real is not None and case.path_parameters and "run_id" in case.path_parameters:
                case.path_parameters["run_id"] = real
            response = case.call(base_url=server.base, session=session, headers=auth, timeout=15)
            assert_json_error_shape(response, case.method.upper())
            sent[case.operation.label] += 1

        exercise()

    assert sum(sent.values()) >= MIN_NEGATIVE, sent
    assert len(sent) == len(operations)


# --- Hostile requests -----------------------------------------------------------------------
METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE"]
NON_ASCII_DIGITS = "²³¹¼٣۳७०๓౩᠓"  # str.isdigit() or int() take most of these

surrogate_text = st.integers(0xD800, 0xDFFF).map(lambda cp: f'"\\u{cp:04x}"')
huge_number = st.one_of(
    st.tuples(st.sampled_from(["", "-"]), st.integers(309, 10**9)).map(lambda t: f"{t[0]}1e{t[1]}"),
    st.integers(309, 3000).map(lambda n: "9" * n + ".0"),
    st.integers(4300, 10_000).map(lambda n: "7" * n),
    st.sampled_from(["NaN", "Infinity", "-Infinity", "1e-99999", "-0", "1E+308", "2e308"]),
)
deep = st.integers(1, 2000).flatmap(
    lambda d: st.sampled_from(["[" * d + "]" * d, '{"a":' * d + "0" + "}" * d, "[" * d])
)
json_value = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=10,
).map(json.dumps)
hostile_value = st.one_of(
    surrogate_text,
    surrogate_text.map(lambda s: f"{{{s}: 1}}"),
    huge_number,
    deep,
    json_value,
    st.sampled_from(NON_ASCII_DIGITS).map(lambda d: f'"{d}"'),
    st.sampled_from(NON_ASCII_DIGITS).map(lambda d: d),
)
FIELDS = [
    "value",
    "metadata",
    "labels",
    "name",
    "args",
    "idempotency_key",
    "result",
    "error",
    "started_at",
    "duration_ms",
    "input_tokens",
    "cost_usd",
    "events",
    "state",
    "version",
    "status",
    "summary",
]


@st.composite
def hostile_body(draw) -> bytes:
    kind = draw(st.sampled_from(["value", "field", "nested", "bytes", "empty"]))
    if kind == "bytes":
        return draw(st.binary(max_size=64))
    if kind == "empty":
        return b""
    value = draw(hostile_value)
    if kind == "field":
        value = f'{{"{draw(st.sampled_from(FIELDS))}": {value}}}'
    elif kind == "nested":
        value = f'{{"events": [{{"kind": "k", "payload": {{"x": [{value}]}}}}], "name": "n"}}'
    return value.encode("utf-8", "surrogatepass")


def hostile_segment(real: list[str]) -> st.SearchStrategy[str]:
    """A path segment: a real id, digits of other scripts, encoded surrogates, traversal, junk."""
    return st.one_of(
        st.sampled_from(real),
        st.sampled_from(
            ["1", "0", "-1", "99999999999999999999", "%ED%B3%BF", "%00", "..", "%2e%2e"]
        ),
        st.sampled_from(NON_ASCII_DIGITS).map(lambda d: quote(d)),
        st.text(max_size=30).map(lambda t: quote(t.encode("utf-8", "surrogatepass"), safe="")),
    )


@st.composite
def hostile_request(draw, paths: list[str], real_runs: list[str]) -> dict:
    template = draw(st.sampled_from(paths))
    segment = hostile_segment([*real_runs, "seed/key"])
    path = template
    for name in ("{run_id}", "{seq}", "{key}"):
        if name in path:
            path = path.replace(name, draw(segment))
    headers = {
        "Content-Type": draw(
            st.sampled_from(
                [
                    "application/json",
                    "application/json; charset=latin-1",
                    "text/plain",
                    "application/x-www-form-urlencoded",
                    "multipart/form-data; boundary=x",
                    "application/xml",
                    "",
                ]
            )
        )
    }
    if draw(st.booleans()):
        # As UTF-8 bytes: http.client would refuse what latin-1 cannot encode.
        digit = st.sampled_from(NON_ASCII_DIGITS)
        value = draw(st.one_of(digit, digit.map(lambda d: f'W/"{d}"'), st.sampled_from(["0", '"'])))
        headers["If-Match"] = value.encode()
    return {
        "method": draw(st.sampled_from(METHODS)),
        "path": path,
        "query": draw(
            st.sampled_from(
                [
                    "",
                    "?limit=²",
                    "?after=%ED%B3%BF",
                    "?limit=1&after=0",
                    "?cursor=W10",
                    "?limit=1e400",
                    "?kind=%00",
                ]
            )
        ),
        "headers": headers,
        "body": draw(hostile_body()),
        "chunked": draw(st.booleans()),
    }


def test_hostile_requests_on_every_method_and_path_get_json_errors_never_5xx(server):
    spec = requests.get(f"{server.base}/api/openapi.json", timeout=10).json()
    paths = [*spec["paths"], "/api/v1/nothing", "/api/v1/runs/{run_id}/nothing", "/api/x"]
    assert len(paths) >= 10
    session = requests.Session()
    auth = {"Authorization": f"Bearer {server.keys['fuzz']}"}
    real_runs = seed_runs(server, session, auth)
    sent: Counter[str] = Counter()

    @given(request=hostile_request(paths, real_runs))
    @settings(
        max_examples=HOSTILE_EXAMPLES,
        derandomize=DERANDOMIZE,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def exercise(request):
        body = request["body"]
        half = len(body) // 2
        data = iter([body[:half], body[half:]]) if request["chunked"] else body
        response = session.request(
            request["method"],
            server.base + request["path"] + request["query"],
            data=data,
            headers={**auth, **request["headers"]},
            timeout=15,
        )
        assert_json_error_shape(response, request["method"])
        sent[request["method"]] += 1
        sent["chunked" if request["chunked"] else "sized"] += 1

    exercise()
    assert sum(sent[m] for m in METHODS) >= MIN_HOSTILE, sent
    assert all(sent[m] for m in METHODS), sent
