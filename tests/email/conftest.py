"""Fixtures for the email providers: the sandbox with the Emarsys, SendGrid and webhook stand-ins,
an HTTP client that trusts it and never really sleeps, and secrets from a plain mapping."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from sandbox import emarsys as emarsys_stand_in
from sandbox import sendgrid, webhook
from sandbox.server import Sandbox
from shared.email.base import EmailMessage, Recipient
from shared.http import HttpClient, RetryPolicy, new_session
from shared.secrets import CachedSecrets, EnvironmentSecrets


def _extensions() -> list[Any]:
    return [emarsys_stand_in.add_routes, sendgrid.add_routes, webhook.add_routes]


@pytest.fixture
async def sandbox() -> AsyncIterator[Sandbox]:
    # Same name as the shared fixture, so the log privacy guard checks these tests too.
    async with Sandbox(seed=42, extensions=_extensions()) as running:
        yield running


class Sleeps:
    """Records the waits the code asked for instead of waiting."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
async def http(sandbox: Sandbox, sleeps: Sleeps) -> AsyncIterator[HttpClient]:
    session = new_session(total_timeout=10, connect_timeout=5, ssl_context=sandbox.client_ssl_context())
    client = HttpClient(
        session, RetryPolicy(max_attempts=3, backoff_base=0.001, backoff_max=0.01), sleep=sleeps
    )
    try:
        yield client
    finally:
        await session.close()


@pytest.fixture
def secret_values(sandbox: Sandbox) -> dict[str, str]:
    """Every stand-in secret, as the environment variables the secret names fall back to."""
    values = {**emarsys_stand_in.env(sandbox), **sendgrid.env(sandbox), **webhook.env(sandbox)}
    names = (
        "EMARSYS_CLIENT_ID",
        "EMARSYS_CLIENT_SECRET",
        "EMARSYS_WSSE_USER",
        "EMARSYS_WSSE_SECRET",
        "SENDGRID_API_KEY",
        "WEBHOOK_SIGNING_SECRET",
    )
    return {name: values[name] for name in names}


@pytest.fixture
def secrets(secret_values: dict[str, str]) -> CachedSecrets:
    return CachedSecrets(EnvironmentSecrets(secret_values), ttl_seconds=300)


def customer_emails(sandbox: Sandbox, count: int) -> list[tuple[str, str, str]]:
    """(email, first name, last name) of the first ``count`` sandbox customers with an address."""
    found = [
        (c.email, c.first_name, c.last_name) for c in sandbox.data.customers.values() if c.email is not None
    ]
    assert len(found) >= count, "the sandbox has too few customers with an address"
    return found[:count]


def message(
    email: str,
    dedup_key: str = "cart-1:v1:1",
    *,
    first_name: str | None = "Ada",
    last_name: str | None = "Lovelace",
    **data: Any,
) -> EmailMessage:
    payload: dict[str, Any] = {
        "firstName": first_name,
        "lastName": last_name,
        "email": email,
        "currency": "USD",
        "cartUrl": "https://shop.example/cart?id=cart-1",
        "subtotal": "59.90",
        "total": "59.90",
        "products": [
            {
                "name": "Trail shoe",
                "recordId": 68719476737,
                "itemId": "0001",
                "quantity": 1,
                "unitPrice": "59.90",
                "lineAmount": "59.90",
                "url": "https://shop.example/trail-shoe/68719476737.p",
            }
        ],
    }
    payload.update(data)
    return EmailMessage(
        dedup_key=dedup_key,
        recipient=Recipient(
            email=email, first_name=first_name, last_name=last_name, language="en-us", customer_id="C0001"
        ),
        data=payload,
    )
