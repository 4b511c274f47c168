"""Emarsys provider against the sandbox's Emarsys stand-in, over real HTTPS."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from sandbox import emarsys as emarsys_stand_in
from sandbox.emarsys import EVENT_ID, UNCONNECTED_EVENT_ID, WSSE_SECRET, WSSE_USER
from sandbox.server import Sandbox
from shared.email.base import (
    ProviderConfigurationError,
    ProviderRejectedError,
    ProviderTransientError,
)
from shared.email.emarsys import SKIP_CONTACT_MISSING, EmarsysProvider
from shared.email.emarsys_auth import OAuthTokenSource, WsseAuth, wsse_created, wsse_digest, wsse_header
from shared.http import HttpClient
from shared.secrets import CachedSecrets

from .conftest import Sleeps, customer_emails, message


def oauth(http: HttpClient, secrets: CachedSecrets, sandbox: Sandbox, **kwargs: Any) -> OAuthTokenSource:
    return OAuthTokenSource(
        http,
        secrets,
        auth_url=emarsys_stand_in.auth_url(sandbox),
        client_id_secret_name="emarsys-client-id",
        client_secret_name="emarsys-client-secret",
        **kwargs,
    )


def wsse(secrets: CachedSecrets, **kwargs: Any) -> WsseAuth:
    return WsseAuth(
        secrets, user_secret_name="emarsys-wsse-user", secret_name="emarsys-wsse-secret", **kwargs
    )


def provider(
    http: HttpClient,
    secrets: CachedSecrets,
    sandbox: Sandbox,
    sleeps: Sleeps,
    *,
    auth: str = "oauth",
    event_id: int = EVENT_ID,
    **kwargs: Any,
) -> EmarsysProvider:
    chosen = oauth(http, secrets, sandbox) if auth == "oauth" else wsse(secrets)
    return EmarsysProvider(
        http, chosen, api_url=emarsys_stand_in.api_url(sandbox), event_id=event_id, sleep=sleeps, **kwargs
    )


# ----- WSSE


def test_wsse_digest_matches_a_vector_computed_by_hand() -> None:
    # sha1("d36e316282959a9ed4c89851497a717f" + "2014-03-20T12:51:45Z" + "secret") in hex is
    # 48711422a57db9c44442a82916ac62971abd1da7 (checked with `openssl sha1`); Emarsys wants the
    # base64 of that 40-character hex string, not of the 20 raw bytes.
    digest = wsse_digest("d36e316282959a9ed4c89851497a717f", "2014-03-20T12:51:45Z", "secret")
    assert digest == "NDg3MTE0MjJhNTdkYjljNDQ0NDJhODI5MTZhYzYyOTcxYWJkMWRhNw=="
    assert len(digest) == 56


def test_wsse_header_layout_and_created_in_utc() -> None:
    created = wsse_created(datetime(2026, 11, 22, 22, 30, tzinfo=UTC) + timedelta(hours=0))
    assert created == "2026-11-22T22:30:00Z"
    header = wsse_header("acme001", "secret", nonce="ab" * 16, created=created)
    assert header == (
        'UsernameToken Username="acme001", '
        f'PasswordDigest="{wsse_digest("ab" * 16, created, "secret")}", '
        f'Nonce="{"ab" * 16}", Created="2026-11-22T22:30:00Z"'
    )


async def _raw_trigger(http: HttpClient, sandbox: Sandbox, header: str) -> tuple[int, Any]:
    email = customer_emails(sandbox, 1)[0][0]
    response = await http.send(
        "POST",
        f"{emarsys_stand_in.api_url(sandbox)}/api/v2/event/{EVENT_ID}/trigger",
        service="test",
        headers={"X-WSSE": header},
        json_body={"key_id": "3", "external_id": email},
    )
    return response.status, response.json()


async def test_stand_in_rejects_a_stale_created_and_a_reused_nonce(
    sandbox: Sandbox, http: HttpClient
) -> None:
    stale = wsse_created(datetime.now(UTC) - timedelta(minutes=6))
    status, body = await _raw_trigger(
        http, sandbox, wsse_header(WSSE_USER, WSSE_SECRET, nonce="a" * 32, created=stale)
    )
    assert (status, body["replyCode"]) == (401, 1)
    assert "5-minute" in body["replyText"]

    fresh = wsse_header(WSSE_USER, WSSE_SECRET, nonce="b" * 32, created=wsse_created(datetime.now(UTC)))
    assert (await _raw_trigger(http, sandbox, fresh))[0] == 200
    status, body = await _raw_trigger(http, sandbox, fresh)
    assert (status, body["replyCode"]) == (401, 1)
    assert "Nonce" in body["replyText"]

    wrong = wsse_header(WSSE_USER, "not-the-secret", nonce="c" * 32, created=wsse_created(datetime.now(UTC)))
    assert (await _raw_trigger(http, sandbox, wrong))[0] == 401
    assert len(emarsys_stand_in.stand_in(sandbox).triggers) == 1


async def test_wsse_trigger_goes_to_v2_with_a_fresh_nonce_per_attempt(
    sandbox: Sandbox, http: HttpClient, secrets: CachedSecrets, sleeps: Sleeps
) -> None:
    stand_in = emarsys_stand_in.stand_in(sandbox)
    email = customer_emails(sandbox, 1)[0][0]
    # A 503 first: the retry must not replay the single-use nonce.
    sandbox.faults.add(f"POST /emarsys/api/v2/event/{EVENT_ID}/trigger", status=503)
    result = await provider(http, secrets, sandbox, sleeps, auth="wsse").send(message(email))
    assert result.status == "sent"
    assert [t.api_version for t in stand_in.triggers] == ["v2"]
    assert stand_in.token_requests == 0


# ----- OAuth


async def test_oauth_token_is_cached_and_shared_by_concurrent_callers(
    sandbox: Sandbox, http: HttpClient, secrets: CachedSecrets, sleeps: Sleeps
) -> None:
    stand_in = emarsys_stand_in.stand_in(sandbox)
    emails = customer_emails(sandbox, 5)
    emarsys = provider(http, secrets, sandbox, sleeps)
    results = await asyncio.gather(
        *(emarsys.send(message(e, f"cart-{i}:v1:1")) for i, (e, _, _) in enumerate(emails))
    )
    assert [r.status for r in results] == ["sent"] * 5
    await emarsys.send(message(emails[0][0], "cart-9:v1:1"))
    assert stand_in.token_requests == 1
    assert {t.api_version for t in stand_in.triggers} == {"v3"}


async def test_oauth_token_is_renewed_before_expiry_and_after_a_401(
    sandbox: Sandbox, http: HttpClient, secrets: CachedSecrets
) -> None:
    stand_in = emarsys_stand_in.stand_in(sandbox)
    now = [1000.0]
    source = oauth(http, secrets, sandbox, clock=lambda: now[0])
    first = await source.token()
    now[0] += stand_in.token_lifetime_seconds - 120
    assert await source.token() == first
    now[0] += 61  # inside the refresh margin
    second = await source.token()
    assert second != first
    assert stand_in.token_requests == 2

    stand_in.expire_tokens()
    emarsys = EmarsysProvider(http, source, api_url=emarsys_stand_in.api_url(sandbox), event_id=EVENT_ID)
    result = await emarsys.send(message(customer_emails(sandbox, 1)[0][0]))
    assert result.status == "sent"
    assert stand_in.token_requests == 3


async def test_wrong_client_secret_is_a_configuration_error_naming_the_secret_not_its_value(
    sandbox: Sandbox, http: HttpClient, sleeps: Sleeps, log_privacy_guard: Any
) -> None:
    wrong = CachedSecrets_from(
        {"EMARSYS_CLIENT_ID": emarsys_stand_in.CLIENT_ID, "EMARSYS_CLIENT_SECRET": "guessed-wrong-value"}
    )
    with pytest.raises(ProviderConfigurationError) as caught:
        await provider(http, wrong, sandbox, sleeps).send(message(customer_emails(sandbox, 1)[0][0]))
    assert "emarsys-client-secret" in str(caught.value)
    assert "guessed-wrong-value" not in str(caught.value)
    assert not any("guessed-wrong-value" in line for line in log_privacy_guard.lines)


def CachedSecrets_from(values: dict[str, str]) -> CachedSecrets:
    from shared.secrets import EnvironmentSecrets

    return CachedSecrets(EnvironmentSecrets(values), ttl_seconds=300)


# ----- the trigger


async def test_trigger_body_shape(
    sandbox: Sandbox, http: HttpClient, secrets: CachedSecrets, sleeps: Sleeps
) -> None:
    stand_in = emarsys_stand_in.stand_in(sandbox)
    email, first, last = customer_emails(sandbox, 1)[0]
    msg = message(email, "cart-7:v3:1", first_name=first, last_name=last, ems_event_time="ignored")
    result = await provider(http, secrets, sandbox, sleeps).send(msg)

    assert result.status == "sent"
    assert result.provider_ids["trigger_id"] == "cart-7:v3:1"
    assert result.provider_ids["event_id"] == str(EVENT_ID)
    [trigger] = stand_in.triggers
    assert (trigger.event_id, trigger.key_id, trigger.external_id, trigger.trigger_id) == (
        EVENT_ID,
        "3",
        email,
        "cart-7:v3:1",
    )
    assert trigger.data["firstName"] == first
    assert trigger.data["lastName"] == last
    assert trigger.data["language"] == "en-us"
    assert trigger.data["products"][0]["name"] == "Trail shoe"
    assert trigger.data["products"][0]["unitPrice"] == "59.90"
    assert "ems_event_time" not in trigger.data


async def test_duplicate_trigger_id_is_accepted_but_recorded_once(
    sandbox: Sandbox, http: HttpClient, secrets: CachedSecrets, sleeps: Sleeps
) -> None:
    stand_in = emarsys_stand_in.stand_in(sandbox)
    emarsys = provider(http, secrets, sandbox, sleeps)
    email = customer_emails(sandbox, 1)[0][0]
    first = await emarsys.send(message(email, "cart-1:v1:1"))
    again = await emarsys.send(message(email, "cart-1:v1:1"))
    assert (first.status, again.status) == ("sent", "sent")
    assert len(stand_in.triggers) == 1
    assert stand_in.duplicates_dropped == 1


@pytest.mark.parametrize(
    ("reply", "error", "fragment"),
    [
        ({"replyCode": 2010, "replyText": "More than one contact"}, ProviderRejectedError, "2010"),
        ({"replyCode": 1003, "replyText": "Internal error"}, ProviderTransientError, "1003"),
        ({"replyCode": 5004, "replyText": "Unknown event"}, ProviderConfigurationError, "EMARSYS_EVENT_ID"),
        (
            {"replyCode": 0, "replyText": "OK", "data": {"connectedTo": False}},
            ProviderConfigurationError,
            "Automation Center",
        ),
    ],
)
async def test_reply_codes_inside_http_200_are_errors(
    sandbox: Sandbox,
    http: HttpClient,
    secrets: CachedSecrets,
    sleeps: Sleeps,
    reply: dict[str, Any],
    error: type[Exception],
    fragment: str,
) -> None:
    sandbox.faults.add(f"POST /emarsys/api/v3/event/{EVENT_ID}/trigger", status=200, body=json.dumps(reply))
    with pytest.raises(error) as caught:
        await provider(http, secrets, sandbox, sleeps).send(message(customer_emails(sandbox, 1)[0][0]))
    assert fragment in str(caught.value)


async def test_missing_contact_is_skipped_by_default(
    sandbox: Sandbox, http: HttpClient, secrets: CachedSecrets, sleeps: Sleeps
) -> None:
    stand_in = emarsys_stand_in.stand_in(sandbox)
    email = customer_emails(sandbox, 1)[0][0]
    stand_in.remove_contact(email)
    result = await provider(http, secrets, sandbox, sleeps).send(message(email))
    assert (result.status, result.reason) == ("skipped", SKIP_CONTACT_MISSING)
    assert stand_in.triggers == []
    assert stand_in.find_contact("3", email) is None


async def test_missing_contact_is_created_then_triggered_when_configured(
    sandbox: Sandbox, http: HttpClient, secrets: CachedSecrets, sleeps: Sleeps
) -> None:
    stand_in = emarsys_stand_in.stand_in(sandbox)
    email, first, last = customer_emails(sandbox, 1)[0]
    stand_in.remove_contact(email)
    emarsys = provider(http, secrets, sandbox, sleeps, create_missing_contacts=True)
    result = await emarsys.send(message(email, first_name=first, last_name=last))
    assert result.status == "sent"
    contact = stand_in.find_contact("3", email)
    assert contact is not None
    assert (contact["1"], contact["2"]) == (first, last)
    assert [t.external_id for t in stand_in.triggers] == [email]


async def test_event_not_connected_tells_the_operator_what_to_configure(
    sandbox: Sandbox, http: HttpClient, secrets: CachedSecrets, sleeps: Sleeps
) -> None:
    emarsys = provider(http, secrets, sandbox, sleeps, event_id=UNCONNECTED_EVENT_ID)
    with pytest.raises(ProviderConfigurationError) as caught:
        await emarsys.send(message(customer_emails(sandbox, 1)[0][0]))
    text = str(caught.value)
    assert "5005" in text
    assert f"'External event' with this event ({UNCONNECTED_EVENT_ID})" in text
    assert "launch" in text
    assert emarsys_stand_in.stand_in(sandbox).triggers == []


async def test_rate_limit_waits_for_the_reset_then_raises_transient_with_retry_after(
    sandbox: Sandbox, http: HttpClient, secrets: CachedSecrets, sleeps: Sleeps
) -> None:
    stand_in = emarsys_stand_in.stand_in(sandbox)
    stand_in.rate_limit = 1
    emarsys = provider(http, secrets, sandbox, sleeps)
    email = customer_emails(sandbox, 1)[0][0]
    assert (await emarsys.send(message(email, "cart-1:v1:1"))).status == "sent"
    with pytest.raises(ProviderTransientError) as caught:
        await emarsys.send(message(email, "cart-2:v1:1"))
    assert "7003" in str(caught.value)
    assert caught.value.retry_after is not None
    assert 0 < caught.value.retry_after <= 60
    # Every retry waited as long as X-RateLimit-Reset asked, not a blind backoff.
    assert len(sleeps.calls) == 2
    assert all(call > 1 for call in sleeps.calls)
    assert len(stand_in.triggers) == 1


async def test_forbidden_is_a_configuration_error(
    sandbox: Sandbox, http: HttpClient, secrets: CachedSecrets, sleeps: Sleeps
) -> None:
    sandbox.faults.add(f"POST /emarsys/api/v3/event/{EVENT_ID}/trigger", status=403, body="{}")
    with pytest.raises(ProviderConfigurationError, match="permission"):
        await provider(http, secrets, sandbox, sleeps).send(message(customer_emails(sandbox, 1)[0][0]))


# ----- batches


async def test_batch_maps_per_contact_results_back_in_order(
    sandbox: Sandbox, http: HttpClient, secrets: CachedSecrets, sleeps: Sleeps
) -> None:
    stand_in = emarsys_stand_in.stand_in(sandbox)
    (a, _, _), (b, _, _), (c, _, _) = customer_emails(sandbox, 3)
    stand_in.remove_contact(b)
    messages = [message(a, "cart-a:v1:1"), message(b, "cart-b:v1:1"), message(c, "cart-c:v1:1")]

    results = await provider(http, secrets, sandbox, sleeps).send_many(messages)
    assert [(r.status, r.reason) for r in results] == [
        ("sent", None),
        ("skipped", SKIP_CONTACT_MISSING),
        ("sent", None),
    ]
    assert [r.provider_ids.get("trigger_id") for r in results] == ["cart-a:v1:1", None, "cart-c:v1:1"]
    assert [t.trigger_id for t in stand_in.triggers] == ["cart-a:v1:1", "cart-c:v1:1"]

    created = await provider(http, secrets, sandbox, sleeps, create_missing_contacts=True).send_many(messages)
    assert [r.status for r in created] == ["sent", "sent", "sent"]
    # a and c were dropped as duplicates of their trigger ids; b was created and triggered.
    assert [t.trigger_id for t in stand_in.triggers] == ["cart-a:v1:1", "cart-c:v1:1", "cart-b:v1:1"]
    assert stand_in.duplicates_dropped == 2


async def test_batch_is_split_at_1000_contacts(
    sandbox: Sandbox, http: HttpClient, secrets: CachedSecrets, sleeps: Sleeps
) -> None:
    stand_in = emarsys_stand_in.stand_in(sandbox)
    messages = [message(f"shopper{i}@example.com", f"cart-{i}:v1:1") for i in range(2001)]
    results = await provider(http, secrets, sandbox, sleeps).send_many(messages)
    # None of these addresses is a contact: each one comes back 2008, mapped to its own message.
    assert len(results) == 2001
    assert {r.reason for r in results} == {SKIP_CONTACT_MISSING}
    assert stand_in.trigger_requests == 3
    assert stand_in.batch_sizes == [1000, 1000, 1]


async def test_batch_is_split_under_1_mb(
    sandbox: Sandbox, http: HttpClient, secrets: CachedSecrets, sleeps: Sleeps
) -> None:
    stand_in = emarsys_stand_in.stand_in(sandbox)
    emails = customer_emails(sandbox, 5)
    big = "x" * 300_000
    messages = [message(e, f"cart-{i}:v1:1", note=big) for i, (e, _, _) in enumerate(emails)]
    results = await provider(http, secrets, sandbox, sleeps).send_many(messages)
    assert [r.status for r in results] == ["sent"] * 5
    assert stand_in.batch_sizes == [3, 2]
    assert all(size <= 1_000_000 for size in stand_in.batch_bytes)


async def test_stand_in_refuses_a_payload_over_1_mb(
    sandbox: Sandbox, http: HttpClient, secrets: CachedSecrets, sleeps: Sleeps
) -> None:
    email = customer_emails(sandbox, 1)[0][0]
    oversized = message(email, note="x" * 1_000_001)
    with pytest.raises(ProviderRejectedError, match="1 MB"):
        await provider(http, secrets, sandbox, sleeps).send(oversized)
    # Even if the client let it through, the stand-in answers like Emarsys and triggers nothing.
    lenient = provider(http, secrets, sandbox, sleeps, max_body_bytes=2_000_000)
    with pytest.raises(ProviderRejectedError, match="5008"):
        await lenient.send(oversized)
    results = await provider(http, secrets, sandbox, sleeps).send_many(
        [oversized, message(email, "cart-2:v1:1")]
    )
    assert [(r.status, r.reason) for r in results] == [
        ("failed", "emarsys_payload_too_large"),
        ("sent", None),
    ]
    assert len(emarsys_stand_in.stand_in(sandbox).triggers) == 1


async def test_no_address_or_secret_in_any_log_record(
    sandbox: Sandbox, http: HttpClient, secrets: CachedSecrets, sleeps: Sleeps, log_privacy_guard: Any
) -> None:
    stand_in = emarsys_stand_in.stand_in(sandbox)
    emails = customer_emails(sandbox, 3)
    stand_in.remove_contact(emails[1][0])
    stand_in.rate_limit = 100
    sandbox.faults.add(f"POST /emarsys/api/v3/event/{EVENT_ID}/trigger", status=503)
    emarsys = provider(http, secrets, sandbox, sleeps, create_missing_contacts=True)
    await emarsys.send(message(emails[0][0]))
    await emarsys.send_many([message(e, f"cart-{i}:v1:1") for i, (e, _, _) in enumerate(emails)])
    assert log_privacy_guard.lines, "the provider should log its work"
    forbidden = [e for e, _, _ in emails] + [
        emarsys_stand_in.CLIENT_SECRET,
        emarsys_stand_in.CLIENT_ID,
        WSSE_SECRET,
    ]
    assert not [line for line in log_privacy_guard.lines if any(f.lower() in line.lower() for f in forbidden)]
