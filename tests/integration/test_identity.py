"""Client-credential tokens from the sandbox's Entra ID stand-in through real MSAL."""

from __future__ import annotations

import asyncio
import gc
import json
from pathlib import Path
from typing import Any

import pytest

from sandbox.server import Sandbox
from sandbox.telemetry import LocalTelemetry, span_text
from shared import telemetry as app_telemetry
from shared.identity import (
    TokenError,
    TokenProvider,
    TokenUnavailableError,
    TokenUnreachableError,
    scope_for,
)
from shared.secrets import CachedSecrets, EnvironmentSecrets
from tests.conftest import event_records

SCOPE = scope_for("https://commerce.dynamics.com")


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def provider(sandbox: Sandbox, secret: str, clock: Clock | None = None, **options: Any) -> TokenProvider:
    secrets = CachedSecrets(EnvironmentSecrets({"ENTRA_CLIENT_SECRET": secret}), ttl_seconds=300)
    return TokenProvider(
        authority=f"{sandbox.authority_host}/{sandbox.tenant_id}",
        client_id=sandbox.client_id,
        secret_name="entra-client-secret",
        secrets=secrets,
        extra_ca_bundle=sandbox.ca_path,
        **({"clock": clock} if clock else {}),
        **options,
    )


async def test_concurrent_callers_share_one_token_request(sandbox: Sandbox) -> None:
    tokens = provider(sandbox, sandbox.client_secret)
    try:
        results = await asyncio.gather(*(tokens.get_token(SCOPE) for _ in range(10)))
        assert len(set(results)) == 1
        assert sandbox.stats.token_requests[sandbox.client_id] == 1
        assert await tokens.get_token(SCOPE) == results[0]
        assert sandbox.stats.token_requests[sandbox.client_id] == 1
    finally:
        tokens.close()


async def test_token_is_renewed_ahead_of_expiry(sandbox: Sandbox) -> None:
    clock = Clock()
    tokens = provider(sandbox, sandbox.client_secret, clock)
    try:
        first = await tokens.get_token(SCOPE)
        clock.now += 3600 - 301  # inside the five-minute refresh margin of a one-hour token
        assert await tokens.get_token(SCOPE) == first
        clock.now += 2
        # MSAL's own cache still holds the old token by wall clock: only our margin asks for a new one.
        tokens.invalidate(SCOPE)
        await tokens.get_token(SCOPE)
        assert tokens.requests_made == 2
    finally:
        tokens.close()


async def test_wrong_secret_is_a_clear_error_without_the_secret(sandbox: Sandbox) -> None:
    tokens = provider(sandbox, "definitely-wrong-secret")
    try:
        with pytest.raises(TokenError) as caught:
            await tokens.get_token(SCOPE)
        assert caught.value.error == "invalid_client"
        # A refused credential is an operator's fix, not Entra ID having a bad minute.
        assert not isinstance(caught.value, TokenUnavailableError)
        assert caught.value.reason == "entra_refused"
        assert "definitely-wrong-secret" not in str(caught.value)
        assert sandbox.client_id in str(caught.value)
    finally:
        tokens.close()


async def test_requests_ca_bundle_does_not_override_trust(
    sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    # requests would let this variable replace the session's CA file and fail verification.
    import certifi

    monkeypatch.setenv("REQUESTS_CA_BUNDLE", certifi.where())
    tokens = provider(sandbox, sandbox.client_secret)
    try:
        assert await tokens.get_token(SCOPE)
    finally:
        tokens.close()


def token_route(sandbox: Sandbox) -> str:
    return f"POST /entra/{sandbox.tenant_id}/oauth2/v2.0/token"


async def test_a_hung_token_endpoint_raises_instead_of_hanging(sandbox: Sandbox) -> None:
    # The stand-in holds the request for a minute; the provider's own timeout must end it first.
    fault = sandbox.faults.add(token_route(sandbox), timeout=True)
    tokens = provider(sandbox, sandbox.client_secret, timeout_seconds=0.5)
    try:
        with pytest.raises(TokenError) as caught:
            await tokens.get_token(SCOPE)
        assert fault.hits == 1
        assert "Entra ID" in str(caught.value)
        assert caught.value.error == "timeout"
        # Nothing is left pending: the next call asks again and gets a token.
        assert await tokens.get_token(SCOPE)
    finally:
        tokens.close()


@pytest.mark.parametrize(
    "fault",
    [
        {"status": 429, "headers": {"Retry-After": "2"}},
        {"status": 429, "body": json.dumps({"error": "temporarily_unavailable"})},
        {"status": 500},
        {"status": 503},
        {"reset": True},
        {"status": 200, "body": '{"access_token": '},
    ],
    ids=["429", "429 temporarily_unavailable", "500", "503", "connection reset", "not JSON"],
)
async def test_entra_failing_is_transient_not_a_refusal(sandbox: Sandbox, fault: dict[str, Any]) -> None:
    hit = sandbox.faults.add(token_route(sandbox), **fault)
    tokens = provider(sandbox, sandbox.client_secret)
    try:
        with pytest.raises(TokenUnavailableError) as caught:
            await tokens.get_token(SCOPE)
        assert hit.hits == 1
        assert caught.value.reason == "entra_unavailable"
        assert sandbox.client_secret not in str(caught.value)
    finally:
        sandbox.faults.clear()
        tokens.close()


@pytest.mark.parametrize("where", ["nobody listens", "untrusted certificate"])
async def test_an_authority_that_cannot_be_connected_to_is_unreachable_not_unavailable(
    sandbox: Sandbox, where: str
) -> None:
    secrets = CachedSecrets(EnvironmentSecrets({"ENTRA_CLIENT_SECRET": sandbox.client_secret}), 300)
    tokens = TokenProvider(
        authority=(
            f"https://127.0.0.1:9/{sandbox.tenant_id}"
            if where == "nobody listens"
            else f"{sandbox.authority_host}/{sandbox.tenant_id}"
        ),
        client_id=sandbox.client_id,
        secret_name="entra-client-secret",
        secrets=secrets,
        # Without the sandbox's CA its certificate is not trusted: a trust-store fault, not an outage.
        extra_ca_bundle=sandbox.ca_path if where == "nobody listens" else None,
    )
    try:
        with pytest.raises(TokenUnreachableError) as caught:
            await tokens.get_token(SCOPE)
        assert not isinstance(caught.value, TokenUnavailableError)
        assert caught.value.reason == "entra_unreachable"
    finally:
        tokens.close()


def token_requested(sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> asyncio.Event:
    """Set when a token request reaches the stand-in's fault injection (the sandbox shares our loop)."""
    seen = asyncio.Event()
    take = sandbox.faults.take

    def spy(method: str, path: str) -> Any:
        if method == "POST" and path.endswith("/oauth2/v2.0/token"):
            seen.set()
        return take(method, path)

    monkeypatch.setattr(sandbox.faults, "take", spy)
    return seen


@pytest.mark.parametrize("cancelled", [0, 1], ids=["first caller cancelled", "second caller cancelled"])
async def test_cancelling_one_caller_leaves_the_others_their_token(
    sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch, cancelled: int
) -> None:
    # Latency keeps the one token request in flight while a caller is cancelled.
    sandbox.faults.add(token_route(sandbox), latency=0.3)
    requested = token_requested(sandbox, monkeypatch)
    tokens = provider(sandbox, sandbox.client_secret)
    try:
        callers = [asyncio.create_task(tokens.get_token(SCOPE)) for _ in range(2)]
        await requested.wait()
        callers[cancelled].cancel()
        other = callers[1 - cancelled]
        assert await other
        with pytest.raises(asyncio.CancelledError):
            await callers[cancelled]
        assert sandbox.stats.token_requests[sandbox.client_id] == 1
        # The token was cached for everyone, the cancelled caller's next call included.
        assert await tokens.get_token(SCOPE) == other.result()
        assert sandbox.stats.token_requests[sandbox.client_id] == 1
    finally:
        tokens.close()


async def test_a_request_nobody_waits_for_any_more_still_fills_the_cache(
    sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    sandbox.faults.add(token_route(sandbox), latency=0.3)
    requested = token_requested(sandbox, monkeypatch)
    tokens = provider(sandbox, sandbox.client_secret)
    try:
        caller = asyncio.create_task(tokens.get_token(SCOPE))
        await requested.wait()
        caller.cancel()
        with pytest.raises(asyncio.CancelledError):
            await caller
        # A caller arriving meanwhile joins the request in flight instead of sending another.
        assert await tokens.get_token(SCOPE)
        assert tokens.requests_made == 1
        assert sandbox.stats.token_requests[sandbox.client_id] == 1
    finally:
        tokens.close()


def _is_file(path: Path) -> bool:
    return path.is_file()


async def test_close_removes_the_temporary_ca_bundle(sandbox: Sandbox) -> None:
    tokens = provider(sandbox, sandbox.client_secret)
    assert await tokens.get_token(SCOPE)
    assert tokens._http is not None
    bundle = Path(str(tokens._http.verify))
    assert bundle != sandbox.ca_path and _is_file(bundle)
    tokens.close()
    assert not _is_file(bundle)
    tokens.close()  # twice is harmless
    # Used again after close, the provider builds a new session and bundle.
    tokens.invalidate(SCOPE)
    assert await tokens.get_token(SCOPE)
    assert tokens._http is not None
    again = Path(str(tokens._http.verify))
    tokens.close()
    assert not _is_file(again)


async def test_a_provider_never_closed_removes_its_bundle_when_collected(sandbox: Sandbox) -> None:
    tokens = provider(sandbox, sandbox.client_secret)
    assert await tokens.get_token(SCOPE)
    assert tokens._http is not None
    bundle = Path(str(tokens._http.verify))
    assert _is_file(bundle)
    del tokens
    gc.collect()
    assert not _is_file(bundle)


async def test_token_requests_are_client_spans_counted_by_result(
    sandbox: Sandbox, telemetry: LocalTelemetry, log_privacy_guard: Any
) -> None:
    app_telemetry.name_scope(SCOPE, "retail_server")
    good, wrong = provider(sandbox, sandbox.client_secret), provider(sandbox, "definitely-wrong-secret")
    try:
        await good.get_token(SCOPE)
        with pytest.raises(TokenError):
            await wrong.get_token(SCOPE)
    finally:
        good.close()
        wrong.close()
    counted = sorted(
        (p.attributes["service"], p.attributes["result"], p.value)
        for p in telemetry.points()
        if p.name == "connector.tokens.acquired"
    )
    assert counted == [("retail_server", "invalid_client", 1.0), ("retail_server", "ok", 1.0)]
    [failure] = event_records(log_privacy_guard.records, "token_failure")
    assert (failure["service"], failure["error"]) == (
        "retail_server",
        "invalid_client",
    )
    spans = [s for s in telemetry.spans() if s.name == "POST /{tenant}/oauth2/v2.0/token"]
    assert [dict(s.attributes or {})["connector.status"] for s in spans] == ["ok", "invalid_client"]
    assert [s.status.is_ok for s in spans] == [True, False]
    assert all("definitely-wrong-secret" not in span_text(s) for s in telemetry.spans())
