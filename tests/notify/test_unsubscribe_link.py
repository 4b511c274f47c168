"""The email's signed unsubscribe link, end to end: notify puts {unsubscribeToken} in the
unsubscribeUrl, the unsubscribe endpoint accepts it, and the next email is suppressed."""

from __future__ import annotations

import json
import time
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import azure.functions as func
import pytest

from sandbox.server import Sandbox
from shared.privacy.suppression import email_hash
from shared.privacy.tokens import verify
from shared.runtime import Runtime
from tests.notify.conftest import (
    NOW,
    RecordingProvider,
    consenting_customer,
    ledger_status,
    own_cart,
    put_on_ledger,
    run_notify,
)

SECRET = "notify-test-unsubscribe-secret-of-32-bytes-or-more"


@pytest.fixture
def notify_overrides(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    monkeypatch.setenv("UNSUBSCRIBE_SIGNING_SECRET", SECRET)
    return {
        "unsubscribe_url_template": "https://shop.example.com/api/unsubscribe?t={unsubscribeToken}&c={customerId}",
        "unsubscribe_link_days": 30,
        "frequency_cap_hours": 0,
    }


async def test_the_email_carries_a_signed_link_that_unsubscribes(
    sandbox: Sandbox, runtime: Runtime, recorder: RecordingProvider, registered_functions: dict[str, Any]
) -> None:
    customer = consenting_customer(sandbox)
    cart = own_cart(sandbox, customer, age=timedelta(minutes=90))
    poison = await run_notify(registered_functions, (await put_on_ledger(runtime, cart)).body)
    assert poison.get() is None and len(recorder.sent) == 1

    url = recorder.sent[0].data["unsubscribeUrl"]
    assert customer.email.lower() not in url.lower() and "%40" not in url
    query = parse_qs(urlsplit(url).query)
    assert query["c"] == [customer.account_number]
    token = query["t"][0]
    claims = verify(token, SECRET, now=NOW)
    assert claims.email_hash == email_hash(customer.email)
    # The token carries nothing readable: not the account, not the address's hash.
    assert customer.account_number not in token and claims.email_hash not in token
    # notify signs with the invocation's clock, NOW is the module's import time.
    assert 29 * 86400 < claims.expires_at - time.time() <= 30 * 86400

    request = func.HttpRequest(
        "POST", "http://localhost/api/unsubscribe", params={"t": token}, body=b"List-Unsubscribe=One-Click"
    )
    response = await registered_functions["unsubscribe"].get_user_function()(request)
    assert response.status_code == 204

    second = own_cart(sandbox, customer)
    await run_notify(registered_functions, (await put_on_ledger(runtime, second)).body)
    assert len(recorder.sent) == 1
    assert await ledger_status(runtime, second) == ("skipped", "suppressed")


async def test_without_the_secret_the_send_fails_and_is_retried(
    sandbox: Sandbox,
    runtime: Runtime,
    recorder: RecordingProvider,
    registered_functions: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("UNSUBSCRIBE_SIGNING_SECRET")
    cart = own_cart(sandbox, consenting_customer(sandbox))
    queued = await put_on_ledger(runtime, cart)
    with pytest.raises(Exception, match="unsubscribe-signing-secret"):
        await run_notify(registered_functions, queued.body)
    assert recorder.sent == []
    status, reason = await ledger_status(runtime, cart)
    assert status == "failed" and reason == "SecretNotFoundError"
    assert json.dumps(reason)


async def test_a_signing_secret_under_32_bytes_is_a_configuration_failure_naming_it(
    sandbox: Sandbox,
    runtime: Runtime,
    recorder: RecordingProvider,
    registered_functions: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("UNSUBSCRIBE_SIGNING_SECRET", "x" * 31)
    cart = own_cart(sandbox, consenting_customer(sandbox))
    queued = await put_on_ledger(runtime, cart)
    with pytest.raises(
        Exception, match=r"'unsubscribe-signing-secret' \(UNSUBSCRIBE_SIGNING_SECRET_NAME\).*32 bytes"
    ):
        await run_notify(registered_functions, queued.body)
    assert recorder.sent == []
    assert await ledger_status(runtime, cart) == ("failed", "provider_misconfigured")
