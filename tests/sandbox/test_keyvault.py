"""The Key Vault stand-in, read through the app's own Key Vault client (``shared.secrets``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from azure.core.exceptions import HttpResponseError

from sandbox import keyvault
from sandbox.server import Sandbox
from sandbox.telemetry import LocalTelemetry
from shared.http import build_ssl_context, new_session
from shared.secrets import KeyVaultOptions, KeyVaultSecrets, SecretNotFoundError, SecretUnavailableError
from tests.conftest import event_records
from tests.key_vault import secret_reads

API = {"api-version": "7.6"}


@pytest.fixture
async def vault_sandbox() -> AsyncIterator[Sandbox]:
    async with Sandbox(seed=42, extensions=[keyvault.add_routes]) as running:
        keyvault.stand_in(running).secrets["entra-client-secret"] = "s3cret-value"
        yield running


@pytest.fixture
async def session(vault_sandbox: Sandbox) -> AsyncIterator[aiohttp.ClientSession]:
    created = new_session(
        total_timeout=10, connect_timeout=5, ssl_context=build_ssl_context(vault_sandbox.ca_path)
    )
    async with created:
        yield created


def client_for(sandbox: Sandbox, session: aiohttp.ClientSession, **options: float) -> KeyVaultSecrets:
    return KeyVaultSecrets(
        sandbox.base_url,
        options=KeyVaultOptions(
            credential=keyvault.SandboxCredential(sandbox), verify_challenge_resource=False, **options
        ),
        session=session,
    )


async def test_the_sdk_reads_a_secret_through_the_challenge_flow(
    vault_sandbox: Sandbox, session: aiohttp.ClientSession
) -> None:
    secrets = client_for(vault_sandbox, session)
    try:
        assert await secrets.get("entra-client-secret") == "s3cret-value"
        assert await secrets.get("entra-client-secret") == "s3cret-value"
        with pytest.raises(SecretNotFoundError, match="'other' is not in Key Vault"):
            await secrets.get("other")
    finally:
        await secrets.close()
    vault = keyvault.stand_in(vault_sandbox)
    # The first request goes without a token and is challenged; the token is then reused.
    assert vault.challenges == 1
    assert vault.reads["entra-client-secret"] == 2
    assert secret_reads(vault_sandbox, "entra-client-secret") == 3


async def test_a_hanging_vault_is_given_up_after_the_bounded_attempts(
    vault_sandbox: Sandbox, session: aiohttp.ClientSession
) -> None:
    vault_sandbox.faults.add("GET /secrets", timeout=True, times=None)
    secrets = client_for(vault_sandbox, session, timeout_seconds=0.2, max_attempts=2)
    try:
        with pytest.raises(SecretUnavailableError, match="'entra-client-secret'") as caught:
            await secrets.get("entra-client-secret")
    finally:
        await secrets.close()
    assert "s3cret" not in str(caught.value)
    assert secret_reads(vault_sandbox, "entra-client-secret") == 2


async def test_a_failing_vault_is_retried_then_unavailable(
    vault_sandbox: Sandbox, session: aiohttp.ClientSession
) -> None:
    vault_sandbox.faults.add("GET /secrets", status=503, times=None)
    secrets = client_for(vault_sandbox, session, max_attempts=3)
    try:
        with pytest.raises(SecretUnavailableError, match="HTTP 503"):
            await secrets.get("entra-client-secret")
    finally:
        await secrets.close()
    assert secret_reads(vault_sandbox, "entra-client-secret") == 3


async def test_wire_rules(vault_sandbox: Sandbox, session: aiohttp.ClientSession) -> None:
    url = f"{vault_sandbox.base_url}/secrets/entra-client-secret"
    async with session.get(url) as response:
        assert response.status == 400
        assert (await response.json())["error"]["code"] == "BadParameter"
    async with session.get(url, params=API) as response:
        assert response.status == 401
        challenge = response.headers["WWW-Authenticate"]
        assert challenge.startswith("Bearer authorization=")
        assert f'authorization="https://login.microsoftonline.com/{vault_sandbox.tenant_id}"' in challenge
        assert 'resource="https://vault.azure.net"' in challenge
    wrong_audience = vault_sandbox.tokens.issue(vault_sandbox.apps[vault_sandbox.client_id], "https://other")
    async with session.get(
        url, params=API, headers={"Authorization": f"Bearer {wrong_audience}"}
    ) as response:
        assert response.status == 401 and "WWW-Authenticate" in response.headers
    vault_sandbox.register_app("stranger", "x" * 40, relying_party=False)
    stranger = await keyvault.SandboxCredential(vault_sandbox, "stranger").get_token(
        f"{keyvault.RESOURCE}/.default"
    )
    async with session.get(
        url, params=API, headers={"Authorization": f"Bearer {stranger.token}"}
    ) as response:
        assert response.status == 403
        assert (await response.json())["error"]["code"] == "Forbidden"


@pytest.mark.parametrize(
    ("fault", "name", "reason", "error"),
    [
        ({"status": 403}, "entra-client-secret", "denied", HttpResponseError),
        ({"status": 503}, "entra-client-secret", "key_vault_unavailable", SecretUnavailableError),
        (None, "no-such-secret", "not_found", SecretNotFoundError),
    ],
    ids=["denied", "unavailable", "not-found"],
)
async def test_a_failed_read_is_a_client_span_a_metric_and_a_record_by_its_reason(
    vault_sandbox: Sandbox,
    session: aiohttp.ClientSession,
    telemetry: LocalTelemetry,
    log_privacy_guard: Any,
    fault: dict[str, Any] | None,
    name: str,
    reason: str,
    error: type[Exception],
) -> None:
    if fault is not None:
        vault_sandbox.faults.add("GET /secrets", times=None, **fault)
    secrets = client_for(vault_sandbox, session, max_attempts=1)
    try:
        with pytest.raises(error) as caught:
            await secrets.get(name)
    finally:
        await secrets.close()
    assert "s3cret" not in str(caught.value)
    failures = [p for p in telemetry.points() if p.name == "connector.secrets.failures"]
    assert [(p.attributes, p.value) for p in failures] == [({"reason": reason}, 1.0)]
    [failure] = event_records(log_privacy_guard.records, "secret_failure")
    assert (failure["reason"], failure["secret"]) == (reason, name)
    [span] = [s for s in telemetry.spans() if s.name == "GET /secrets/{name}"]
    attributes = dict(span.attributes or {})
    assert (attributes["connector.service"], attributes["connector.status"]) == ("key_vault", reason)
    assert not span.status.is_ok
