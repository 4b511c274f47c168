"""The queue function with its Entra secret in a Key Vault that hangs: the message
fails transiently after Key Vault's bounded attempts (the host retries it), and the retry sends."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from sandbox import keyvault, orders
from sandbox.server import Sandbox
from shared.runtime import Runtime, set_runtime
from shared.secrets import SecretUnavailableError
from shared.settings import Settings
from tests.key_vault import SECRETS_ROUTE, key_vault_runtime, secret_reads
from tests.notify.conftest import (
    NOW,
    RecordingProvider,
    consenting_customer,
    ledger_status,
    own_cart,
    put_on_ledger,
    run_notify,
)

SECRET_NAME = "entra-client-secret"


@pytest.fixture
async def sandbox() -> AsyncIterator[Sandbox]:
    async with Sandbox(seed=42, now=NOW, extensions=[orders.add_routes, keyvault.add_routes]) as running:
        yield running


@pytest.fixture
async def runtime(
    sandbox: Sandbox, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Runtime]:
    monkeypatch.delenv("ENTRA_CLIENT_SECRET")
    created = key_vault_runtime(
        sandbox,
        settings,
        {SECRET_NAME: sandbox.client_secret},
        key_vault_timeout_seconds=0.2,
        key_vault_max_attempts=2,
    )
    set_runtime(created)
    try:
        yield created
    finally:
        set_runtime(None)
        await created.close()


async def test_a_hanging_key_vault_fails_the_message_transiently_and_the_retry_sends(
    registered_functions: dict[str, Any], runtime: Runtime, sandbox: Sandbox, recorder: RecordingProvider
) -> None:
    cart = own_cart(sandbox, consenting_customer(sandbox))
    queued = await put_on_ledger(runtime, cart)
    sandbox.faults.add(SECRETS_ROUTE, timeout=True, times=None)

    # Raised, so the host makes the message visible again and retries it.
    with pytest.raises(SecretUnavailableError):
        await run_notify(registered_functions, queued.body)
    assert await ledger_status(runtime, cart) == ("failed", "key_vault_unavailable")
    assert secret_reads(sandbox, SECRET_NAME) == 2
    assert recorder.sent == [] and not any(r.startswith("POST /rs/") for r in sandbox.stats.requests)

    sandbox.faults.clear()
    poison = await run_notify(registered_functions, queued.body, dequeue_count=2)
    assert poison.get() is None
    assert await ledger_status(runtime, cart) == ("sent", None)
    assert len(recorder.sent) == 1
