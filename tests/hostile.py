"""Hostile input for the property-based tests (hypothesis) of every HTTP body and the queue message.

The profile is deterministic (``derandomize``: the same examples on every run and machine, no
example database) and bounded (``MAX_EXAMPLES`` per test, no deadline, so a busy machine cannot
make a test flaky). The strategies mix what an attacker or a broken client sends: arbitrary bytes,
arbitrary JSON, valid documents with one part replaced, removed or added, and nesting far deeper
than any real document.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

MAX_EXAMPLES = 200
HOSTILE = settings(
    max_examples=MAX_EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    # The sandbox and the runtime are made once per test, not per example, on purpose: examples
    # share them as a host's invocations share a process.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# Cases tried per test, by name: the figures docs/RELIABILITY.md quotes.
TRIED: Counter[str] = Counter()

_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
    | st.sampled_from(["", " ", "0", "-1", "1e400", "null", "\u0000", "\ud7ff", "a@b.c", "x" * 300])
)
JSON_VALUES: st.SearchStrategy[Any] = st.recursive(
    _SCALARS,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)


@st.composite
def _deep(draw: st.DrawFn) -> bytes:
    depth = draw(st.integers(min_value=33, max_value=5000))
    opener, closer = draw(st.sampled_from([("[", "]"), ('{"a":', "}"), ('[{"a":', "}]")]))
    closed = draw(st.booleans())
    return (opener * depth + ("1" + closer * depth if closed else "")).encode()


DEEP_BODIES = _deep()


def _paths(document: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(document, dict):
        for key, value in document.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(document, list):
        for index, value in enumerate(document):
            found += _paths(value, (*prefix, index))
    return found


@st.composite
def mutated(draw: st.DrawFn, valid: Any) -> Any:
    """``valid`` with one part replaced by any JSON value, removed, or given an extra key."""
    document = json.loads(json.dumps(valid))
    path = draw(st.sampled_from(_paths(document)))
    action = draw(st.sampled_from(["replace", "remove", "add"]))
    if not path:
        return draw(JSON_VALUES) if action == "replace" else document
    parent = document
    for part in path[:-1]:
        parent = parent[part]
    last = path[-1]
    if action == "replace":
        parent[last] = draw(JSON_VALUES)
    elif action == "remove":
        del parent[last]
    elif isinstance(parent[last], dict):
        parent[last][draw(st.text(min_size=1, max_size=12))] = draw(JSON_VALUES)
    else:
        parent[last] = [parent[last], draw(JSON_VALUES)]
    return document


# Number tokens json.dumps never writes, but a client can: overflowing, huge, negative zero.
_RAW_TOKENS = ["1e400", "-1e400", "1E999999", "123456789012345678901234567890123", "-0", "1e-400", "0.1e1"]
_SENTINEL = "\u2063raw\u2063"


@st.composite
def _with_raw_number(draw: st.DrawFn, valid: Any) -> bytes:
    document = json.loads(json.dumps(valid))
    leaves = [path for path in _paths(document) if path and not isinstance(_at(document, path), dict | list)]
    path = draw(st.sampled_from(leaves))
    parent = _at(document, path[:-1])
    parent[path[-1]] = _SENTINEL
    token = draw(st.sampled_from(_RAW_TOKENS))
    return json.dumps(document).replace(json.dumps(_SENTINEL), token).encode("utf-8")


def _at(document: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        document = document[part]
    return document


def json_bytes(values: st.SearchStrategy[Any]) -> st.SearchStrategy[bytes]:
    return values.map(lambda value: json.dumps(value).encode("utf-8"))


def bodies(valid: Any) -> st.SearchStrategy[bytes]:
    """Request bodies or queue messages around a ``valid`` document."""
    return st.one_of(
        st.binary(max_size=200),
        json_bytes(JSON_VALUES),
        json_bytes(mutated(valid)),
        json_bytes(mutated(valid).flatmap(mutated)),
        _with_raw_number(valid),
        DEEP_BODIES,
        st.text(max_size=200).map(lambda text: text.encode("utf-8", errors="surrogatepass")),
    )


CONTENT_TYPES = st.sampled_from(
    [
        *["application/json"] * 5,
        "application/json; charset=utf-8",
        "application/merge-patch+json",
        "text/plain",
        "application/json; charset=latin-1",
        "",
    ]
)


# Refusals the connector decides on the input alone, before any upstream call; each names a field.
OWN_REFUSALS = frozenset({"validation", "invalid-json", "payload-too-large", "unsupported-media-type"})


def problem_of(response: Any) -> dict[str, Any]:
    """The problem body of an error answer, checked against RFC 9457 and this connector's contract:
    ``application/problem+json`` with its status and the request's correlation id (a replayed
    answer keeps the first one's), and, when the input was refused, the fields in ``errors``."""
    assert response.mimetype == "application/problem+json", response.mimetype
    problem: dict[str, Any] = json.loads(response.get_body())
    assert problem["status"] == response.status_code
    assert problem["type"].startswith("urn:d365-commerce-connector:problem:"), problem["type"]
    if response.headers.get("Idempotent-Replayed") != "true":
        assert problem["correlationId"] == response.headers["x-correlation-id"]
    if kind_of(problem) in OWN_REFUSALS:
        assert problem["errors"], f"no field named: {problem}"
    assert all(isinstance(error["path"], str) and error["message"] for error in problem["errors"])
    return problem


def kind_of(problem: dict[str, Any]) -> str:
    return str(problem["type"]).rsplit(":", 1)[-1]
