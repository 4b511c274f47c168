"""Hostile input for the privacy endpoints: POST /api/privacy/erasure with any body, and
GET/POST /api/unsubscribe with any ``t`` and any body, through the registered functions.

Never a 5xx; a refusal is ``application/problem+json`` naming the field; a refused request
changes nothing in the store and calls nothing upstream (the sandbox counts every request).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import azure.functions as func
import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from sandbox.server import Sandbox
from shared.json_limits import MAX_JSON_DEPTH
from shared.privacy.tokens import token_for
from shared.runtime import Runtime, set_runtime
from shared.settings import Settings
from shared.timeutil import utcnow
from tests.customers.helpers import principal
from tests.hostile import CONTENT_TYPES, HOSTILE, OWN_REFUSALS, TRIED, bodies, kind_of, problem_of
from tests.privacy.helpers import SECRET, call

ERASURE = {"email": "robin.hostile@example.org", "customerAccount": "C-1"}
_WRITES = ("create", "replace", "upsert", "delete")


@pytest.fixture
async def privileged(
    runtime: Runtime, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Runtime]:
    """A runtime behind App Service authentication, whose callers below hold the privacy role:
    the bodies, not the caller, are what these tests vary."""
    monkeypatch.setenv("WEBSITE_AUTH_ENABLED", "True")
    created = Runtime.create(settings.model_copy(update={"easy_auth_enabled": True}))
    set_runtime(created)
    try:
        yield created
    finally:
        set_runtime(runtime)
        await created.close()


@pytest.fixture
def store_writes(privileged: Runtime, runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Every write to either runtime's store, by operation."""
    writes: Counter[str] = Counter()
    for store in {id(privileged.store): privileged.store, id(runtime.store): runtime.store}.values():
        for name in _WRITES:
            original = getattr(store, name)

            async def counted(*args: Any, _original: Any = original, _name: str = name, **kwargs: Any) -> Any:
                writes[_name] += 1
                return await _original(*args, **kwargs)

            monkeypatch.setattr(store, name, counted)
    return writes


def _upstream(sandbox: Sandbox) -> int:
    return sum(sandbox.stats.requests.values()) + sum(sandbox.stats.token_requests.values())


def erasure_request(body: bytes, content_type: str) -> func.HttpRequest:
    headers = {"Content-Type": content_type, "X-MS-CLIENT-PRINCIPAL": principal("Privacy.Erase")}
    return func.HttpRequest("POST", "http://localhost/api/privacy/erasure", headers=headers, body=body)


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"[" * 1000, id="1000 unclosed arrays"),
        pytest.param(b'{"email": ' + b"[" * 1500 + b"]" * 1500 + b"}", id="1500 closed arrays"),
        pytest.param(b"{" * (MAX_JSON_DEPTH + 1), id="one level too deep"),
    ],
)
async def test_deeply_nested_json_is_invalid_json(
    registered_functions: dict[str, Any],
    privileged: Runtime,
    sandbox: Sandbox,
    store_writes: Counter[str],
    raw: bytes,
) -> None:
    response = await call(registered_functions, "privacy_erasure", erasure_request(raw, "application/json"))
    assert response.status_code == 400
    problem = problem_of(response)
    assert kind_of(problem) == "invalid-json" and problem["errors"][0]["path"] == ""
    assert not store_writes and _upstream(sandbox) == 0


@HOSTILE
@given(body=bodies(ERASURE), content_type=CONTENT_TYPES)
async def test_erasure_answers_any_body_without_a_5xx(
    registered_functions: dict[str, Any],
    privileged: Runtime,
    sandbox: Sandbox,
    store_writes: Counter[str],
    body: bytes,
    content_type: str,
) -> None:
    TRIED["privacy_erasure"] += 1
    writes, upstream = sum(store_writes.values()), _upstream(sandbox)
    response = await call(registered_functions, "privacy_erasure", erasure_request(body, content_type))
    event(f"status {response.status_code}")
    assert response.status_code < 500, response.get_body()
    # The caller holds the role: a 401 or 403 here means the auth rules changed under this test.
    assert response.status_code not in (401, 403), response.get_body()
    if response.status_code >= 400:
        problem = problem_of(response)
        assert kind_of(problem) in OWN_REFUSALS, problem
        assert sum(store_writes.values()) == writes and _upstream(sandbox) == upstream
    else:
        assert response.status_code == 200


# Made once, so every example (and hypothesis's replay of a failing one) sees the same token.
TOKEN = token_for(
    "robin.hostile@example.org", secret=SECRET, now=utcnow().replace(hour=0, minute=0), days=365
)


@st.composite
def _tokens(draw: st.DrawFn) -> str | None:
    """No token, any text, a real token, or one with a character changed, cut or extended."""
    kind = draw(st.sampled_from(["none", "intact", "text", "changed", "cut", "extended", "two parts"]))
    if kind == "none":
        return None
    if kind == "intact":
        return TOKEN
    if kind == "text":
        return draw(st.text(max_size=300))
    token = TOKEN
    if kind == "changed":
        at = draw(st.integers(0, len(token) - 1))
        replacement = draw(st.characters().filter(lambda c: c != token[at]))
        return token[:at] + replacement + token[at + 1 :]
    if kind == "cut":
        return token[: draw(st.integers(0, len(token) - 1))]
    if kind == "extended":
        return token + draw(st.text(min_size=1, max_size=2000))
    return draw(st.text(max_size=80)) + "." + draw(st.text(max_size=80))


UNSUBSCRIBE_BODIES = st.one_of(
    st.binary(max_size=300),
    st.just(b"List-Unsubscribe=One-Click"),
    st.just(b"confirm=yes"),
    bodies({"List-Unsubscribe": "One-Click"}),
)


@HOSTILE
@given(
    method=st.sampled_from(["GET", "POST"]),
    token=_tokens(),
    body=UNSUBSCRIBE_BODIES,
    content_type=st.sampled_from(["application/x-www-form-urlencoded", "text/plain", "application/json", ""]),
)
async def test_unsubscribe_answers_any_token_and_body_without_a_5xx(
    registered_functions: dict[str, Any],
    privileged: Runtime,
    sandbox: Sandbox,
    store_writes: Counter[str],
    monkeypatch: pytest.MonkeyPatch,
    method: str,
    token: str | None,
    body: bytes,
    content_type: str,
) -> None:
    TRIED["unsubscribe"] += 1
    monkeypatch.setenv("UNSUBSCRIBE_SIGNING_SECRET", SECRET)
    writes, upstream = sum(store_writes.values()), _upstream(sandbox)
    request = func.HttpRequest(
        method,
        "http://localhost/api/unsubscribe",
        headers={"Content-Type": content_type} if content_type else {},
        params={} if token is None else {"t": token},
        body=body if method == "POST" else b"",
    )
    response = await call(registered_functions, "unsubscribe", request)
    event(f"status {response.status_code}")
    assert response.status_code < 500, response.get_body()
    assert _upstream(sandbox) == upstream
    if response.status_code >= 400:
        problem = problem_of(response)
        assert response.status_code == 400 and [e["path"] for e in problem["errors"]] == ["t"], problem
        assert sum(store_writes.values()) == writes
    else:
        # Only an intact token gets this far; only its POST changes anything.
        assert response.status_code in (200, 204)
        if method == "GET":
            assert sum(store_writes.values()) == writes
