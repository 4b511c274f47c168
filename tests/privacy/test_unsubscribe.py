"""GET/POST /api/unsubscribe?t=<token> through the registered function."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest

from sandbox.server import Sandbox
from shared.privacy.suppression import SuppressionList, email_hash
from shared.privacy.tokens import token_for
from shared.runtime import Runtime
from shared.timeutil import utcnow
from tests.conftest import _Capture
from tests.privacy.helpers import SECRET, call, unsubscribe_request

PROBLEM = "application/problem+json"


def seeded_email(sandbox: Sandbox) -> tuple[str, str]:
    customer = next(c for c in sandbox.data.customers.values() if c.email)
    return customer.email, customer.account_number


def test_route_methods_and_auth_level(registered_functions: dict[str, Any]) -> None:
    function = registered_functions["unsubscribe"]
    trigger = json.loads(function.get_function_json())["bindings"][0]
    assert trigger["type"] == "httpTrigger" and trigger["route"] == "unsubscribe"
    assert sorted(m.upper() for m in trigger["methods"]) == ["GET", "POST"]
    assert trigger["authLevel"].upper() == "ANONYMOUS"


async def test_get_shows_a_confirmation_and_changes_nothing(
    registered_functions: dict[str, Any], runtime: Runtime, sandbox: Sandbox
) -> None:
    """Mail scanners and link previews follow links: only the POST of the button unsubscribes."""
    email, _ = seeded_email(sandbox)
    token = token_for(email, secret=SECRET, now=utcnow(), days=365)
    suppression = SuppressionList(runtime.store)

    response = await call(registered_functions, "unsubscribe", unsubscribe_request("GET", token))

    assert response.status_code == 200
    assert response.mimetype == "text/html"
    page = response.get_body().decode()
    assert '<form method="post">' in page and "<button" in page
    assert response.headers["Cache-Control"] == "no-store"
    assert not await suppression.contains(email)


async def test_the_confirmation_button_suppresses_and_shows_a_page(
    registered_functions: dict[str, Any], runtime: Runtime, sandbox: Sandbox
) -> None:
    email, _ = seeded_email(sandbox)
    token = token_for(email, secret=SECRET, now=utcnow(), days=365)
    suppression = SuppressionList(runtime.store)
    for _ in range(2):  # idempotent
        response = await call(
            registered_functions, "unsubscribe", unsubscribe_request("POST", token, one_click=False)
        )
        assert response.status_code == 200
        assert "You are unsubscribed" in response.get_body().decode()
    assert await suppression.contains(email.upper())
    stored = await runtime.store.read("state", f"suppress|{email_hash(email)}", "entry")
    assert stored is not None and stored.body["reason"] == "unsubscribed"
    assert email.lower() not in json.dumps(stored.body).lower()


async def test_one_click_post_suppresses_and_answers_204(
    registered_functions: dict[str, Any], runtime: Runtime, sandbox: Sandbox
) -> None:
    email, _ = seeded_email(sandbox)
    token = token_for(email, secret=SECRET, now=utcnow(), days=1)
    for _ in range(2):
        response = await call(registered_functions, "unsubscribe", unsubscribe_request("POST", token))
        assert response.status_code == 204
        assert response.get_body() == b""
    assert await SuppressionList(runtime.store).contains(email)


@pytest.mark.parametrize("case", ["missing", "garbage", "forged", "expired"])
async def test_a_bad_token_is_a_400_naming_t_without_echoing_it(
    registered_functions: dict[str, Any], runtime: Runtime, sandbox: Sandbox, case: str
) -> None:
    email, _ = seeded_email(sandbox)
    now = utcnow()
    token = {
        "missing": None,
        "garbage": "not-a-token-at-all",
        "forged": token_for(email, secret="guessed-but-at-least-32-bytes-long", now=now, days=365),
        "expired": token_for(email, secret=SECRET, now=now - timedelta(days=2), days=1),
    }[case]
    for method in ("GET", "POST"):
        response = await call(registered_functions, "unsubscribe", unsubscribe_request(method, token))
        assert response.status_code == 400
        assert response.mimetype == PROBLEM
        text = response.get_body().decode()
        body = json.loads(text)
        assert [e["path"] for e in body["errors"]] == ["t"]
        assert ("expired" in body["errors"][0]["message"]) == (case == "expired")
        if token:
            assert token not in text and token.split(".")[-1] not in text
    assert not await SuppressionList(runtime.store).contains(email)


async def test_without_the_signing_secret_it_answers_503(
    registered_functions: dict[str, Any], runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("UNSUBSCRIBE_SIGNING_SECRET")
    response = await call(registered_functions, "unsubscribe", unsubscribe_request("GET", "a.b"))
    assert response.status_code == 503
    assert json.loads(response.get_body())["type"].endswith(":not-configured")


async def test_a_signing_secret_under_32_bytes_is_a_503_that_names_no_value(
    registered_functions: dict[str, Any],
    runtime: Runtime,
    sandbox: Sandbox,
    monkeypatch: pytest.MonkeyPatch,
    log_privacy_guard: _Capture,
) -> None:
    email, _ = seeded_email(sandbox)
    token = token_for(email, secret=SECRET, now=utcnow(), days=1)
    monkeypatch.setenv("UNSUBSCRIBE_SIGNING_SECRET", "only-31-bytes-long-secret-value")
    for method in ("GET", "POST"):
        response = await call(registered_functions, "unsubscribe", unsubscribe_request(method, token))
        assert response.status_code == 503
        text = response.get_body().decode()
        assert json.loads(text)["type"].endswith(":not-configured")
        # No detail of why: neither the value nor the rule it broke (a correlation id may hold "32").
        assert "only-31" not in text and "bytes" not in text and "short" not in text
    assert not await SuppressionList(runtime.store).contains(email)
    lines = "\n".join(log_privacy_guard.lines)
    assert "'unsubscribe-signing-secret' (UNSUBSCRIBE_SIGNING_SECRET_NAME) is too short" in lines
    assert "only-31" not in lines


async def test_the_logs_hold_neither_the_address_nor_the_token(
    registered_functions: dict[str, Any],
    runtime: Runtime,
    sandbox: Sandbox,
    log_privacy_guard: _Capture,
) -> None:
    email, _ = seeded_email(sandbox)
    token = token_for(email, secret=SECRET, now=utcnow(), days=1)
    await call(registered_functions, "unsubscribe", unsubscribe_request("POST", token))
    await call(registered_functions, "unsubscribe", unsubscribe_request("POST", token + "x"))
    lines = "\n".join(log_privacy_guard.lines)
    assert "unsubscribe" in lines  # something was logged
    for needle in (email, email_hash(email), token.split(".")[1]):
        assert needle.lower() not in lines.lower()
