"""POST /api/customers with its client secret in a Key Vault that hangs.

The till waits for this call, so the secret read stays inside the call's own deadline
(``FNO_TIMEOUT_SECONDS``) and a Key Vault that does not answer is a 503 problem the till can
retry, with nothing sent to F&O and no secret in the answer or the logs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from sandbox import fno, keyvault
from sandbox.server import Sandbox
from shared.runtime import Runtime, set_runtime
from shared.settings import Settings
from tests.conftest import _Capture
from tests.customers.conftest import create_route
from tests.customers.helpers import body_of, call, http_request
from tests.hostile import problem_of
from tests.key_vault import SECRETS_ROUTE, key_vault_runtime, secret_reads

SECRET_NAME = "entra-client-secret"


@pytest.fixture
async def sandbox() -> AsyncIterator[Sandbox]:
    async with Sandbox(seed=42, extensions=[fno.add_routes, keyvault.add_routes]) as running:
        yield running


@pytest.fixture
def settings(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    # The secret is in Key Vault only: an environment fallback would hide a Key Vault failure.
    monkeypatch.delenv("ENTRA_CLIENT_SECRET")
    return settings


async def _use(sandbox: Sandbox, settings: Settings, **overrides: Any) -> Runtime:
    created = key_vault_runtime(sandbox, settings, {SECRET_NAME: sandbox.client_secret}, **overrides)
    set_runtime(created)
    return created


async def _create(functions: dict[str, Any], payload: dict[str, Any], key: str) -> Any:
    request = http_request("customers", payload, headers={"Idempotency-Key": key})
    return await call(functions, "create_customer", request)


def _assert_unavailable(response: Any, sandbox: Sandbox) -> None:
    assert response.status_code == 503
    problem = problem_of(response)
    assert problem["type"].endswith(":credentials-unavailable")
    assert int(response.headers["Retry-After"]) > 0
    assert sandbox.client_secret not in response.get_body().decode()


async def test_a_hanging_key_vault_answers_503_within_the_calls_deadline(
    registered_functions: dict[str, Any],
    sandbox: Sandbox,
    settings: Settings,
    payload: dict[str, Any],
    fno_stand_in: fno.FinanceOpsStandIn,
    log_privacy_guard: _Capture,
) -> None:
    """Key Vault's own limits are far longer than the till's deadline here: only the deadline ends it."""
    sandbox.faults.add(SECRETS_ROUTE, timeout=True, times=None)
    runtime = await _use(sandbox, settings, fno_timeout_seconds=0.5, key_vault_timeout_seconds=50)
    try:
        response = await _create(registered_functions, payload, "kv-deadline")
    finally:
        set_runtime(None)
        await runtime.close()
    _assert_unavailable(response, sandbox)
    assert sandbox.stats.requests[create_route(settings)] == 0 and fno_stand_in.creations == 0
    assert secret_reads(sandbox, SECRET_NAME) >= 1
    assert not any(sandbox.client_secret in line for line in log_privacy_guard.lines)


async def test_a_key_vault_that_gives_up_answers_503_and_the_retry_creates(
    registered_functions: dict[str, Any],
    sandbox: Sandbox,
    settings: Settings,
    payload: dict[str, Any],
    fno_stand_in: fno.FinanceOpsStandIn,
) -> None:
    """Key Vault's bounded attempts end before the deadline: 503, the key released, the retry works."""
    sandbox.faults.add(SECRETS_ROUTE, timeout=True, times=None)
    runtime = await _use(
        sandbox, settings, fno_timeout_seconds=10, key_vault_timeout_seconds=0.2, key_vault_max_attempts=2
    )
    try:
        first = await _create(registered_functions, payload, "kv-gives-up")
        _assert_unavailable(first, sandbox)
        assert secret_reads(sandbox, SECRET_NAME) == 2
        assert fno_stand_in.creations == 0

        sandbox.faults.clear()
        again = await _create(registered_functions, payload, "kv-gives-up")
    finally:
        set_runtime(None)
        await runtime.close()
    assert again.status_code == 201, again.get_body()
    assert body_of(again)["customerAccount"]
    assert fno_stand_in.creations == 1
