"""GET/POST /api/unsubscribe with the signing secret in a Key Vault that hangs:
a 503 problem after Key Vault's bounded attempts, nothing changed, and a working link afterwards."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from sandbox import keyvault
from sandbox.server import Sandbox
from shared.privacy.suppression import SuppressionList
from shared.privacy.tokens import token_for
from shared.runtime import set_runtime
from shared.settings import Settings
from shared.timeutil import utcnow
from tests.hostile import problem_of
from tests.key_vault import SECRETS_ROUTE, key_vault_runtime, secret_reads
from tests.privacy.helpers import SECRET, call, unsubscribe_request

SECRET_NAME = "unsubscribe-signing-secret"
EMAIL = "robin.hostile@example.org"


@pytest.fixture
async def sandbox() -> AsyncIterator[Sandbox]:
    async with Sandbox(seed=42, extensions=[keyvault.add_routes]) as running:
        yield running


async def test_a_hanging_key_vault_answers_503_and_changes_nothing(
    registered_functions: dict[str, Any],
    sandbox: Sandbox,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("UNSUBSCRIBE_SIGNING_SECRET")
    sandbox.faults.add(SECRETS_ROUTE, timeout=True, times=None)
    runtime = key_vault_runtime(
        sandbox, settings, {SECRET_NAME: SECRET}, key_vault_timeout_seconds=0.2, key_vault_max_attempts=2
    )
    set_runtime(runtime)
    token = token_for(EMAIL, secret=SECRET, now=utcnow(), days=30)
    try:
        for method in ("GET", "POST"):
            response = await call(registered_functions, "unsubscribe", unsubscribe_request(method, token))
            assert response.status_code == 503, response.get_body()
            problem = problem_of(response)
            assert problem["type"].endswith(":secret-store-unavailable")
            assert int(response.headers["Retry-After"]) > 0
            assert SECRET not in response.get_body().decode()
        assert secret_reads(sandbox, SECRET_NAME) == 4  # two attempts per request, no more
        assert not await SuppressionList(runtime.store).contains(EMAIL)

        sandbox.faults.clear()
        response = await call(registered_functions, "unsubscribe", unsubscribe_request("POST", token))
        assert response.status_code == 204
        assert await SuppressionList(runtime.store).contains(EMAIL)
    finally:
        set_runtime(None)
        await runtime.close()
