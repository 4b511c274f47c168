"""The managed identity's token as MSAL's client assertion: fetched on the loop through
azure-identity from the sandbox's managed-identity endpoint, kept, shared, and explained when
Entra ID refuses it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from sandbox.managed_identity import TOKEN_EXCHANGE_AUDIENCE
from sandbox.server import Sandbox
from shared.http import build_ssl_context, new_session
from shared.identity import TokenProvider, scope_for
from shared.managed_identity import (
    FederationError,
    ManagedIdentityAssertion,
    token_exchange_audience,
)
from shared.runtime import Runtime, sdk_modules
from shared.secrets import CachedSecrets, EnvironmentSecrets
from shared.settings import Settings, SettingsError, load_settings
from tests.conftest import sandbox_settings

SCOPE = scope_for("https://commerce.dynamics.com")


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def identity_env(sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in sandbox.managed_identity.env().items():
        monkeypatch.setenv(name, value)


@pytest.fixture
async def make_assertion(sandbox: Sandbox, identity_env: None) -> AsyncIterator[Any]:
    session = new_session(total_timeout=5, connect_timeout=5, ssl_context=build_ssl_context(sandbox.ca_path))
    made: list[ManagedIdentityAssertion] = []

    def make(**options: Any) -> ManagedIdentityAssertion:
        assertion = ManagedIdentityAssertion(
            client_id=sandbox.managed_identity.client_id, session=session, max_attempts=1, **options
        )
        made.append(assertion)
        return assertion

    yield make
    for assertion in made:
        await assertion.close()
    await session.close()


async def test_the_identity_token_is_kept_until_shortly_before_it_expires(
    sandbox: Sandbox, make_assertion: Any
) -> None:
    clock = Clock(time.time())
    assertion = make_assertion(clock=clock, refresh_margin_seconds=300)
    first = await assertion.refresh()
    clock.now += sandbox.managed_identity.lifetime_seconds - 301
    assert await assertion.refresh() == first
    assert assertion.fetches == 1
    clock.now += 2  # inside the margin: ask again
    await assertion.refresh()
    assert assertion.fetches == 2


async def test_concurrent_callers_share_one_fetch(sandbox: Sandbox, make_assertion: Any) -> None:
    assertion = make_assertion()
    tokens = await asyncio.gather(*(assertion.refresh() for _ in range(10)))
    assert len(set(tokens)) == 1
    assert assertion.fetches == 1
    assert sandbox.managed_identity.issued[TOKEN_EXCHANGE_AUDIENCE] == 1


async def test_msal_only_reads_what_was_fetched_on_the_loop(make_assertion: Any) -> None:
    assertion = make_assertion()
    with pytest.raises(RuntimeError, match="fetched"):
        assertion.current()
    token = await assertion.refresh()
    assert assertion.current() == token


async def test_one_identity_token_serves_two_app_registrations(sandbox: Sandbox, make_assertion: Any) -> None:
    other = "f0f0f0f0-1111-4222-8333-d365f0000002"
    sandbox.register_app(other, "unused", relying_party=False)
    sandbox.federate(other)
    assertion = make_assertion()
    providers = [
        TokenProvider(
            authority=sandbox.authority,
            client_id=client_id,
            assertion=assertion,
            extra_ca_bundle=sandbox.ca_path,
        )
        for client_id in (sandbox.client_id, other)
    ]
    try:
        for provider in providers:
            await provider.get_token(SCOPE)
            provider.invalidate(SCOPE)
            await provider.get_token(SCOPE)
    finally:
        for provider in providers:
            provider.close()
    assert (sandbox.stats.token_requests[sandbox.client_id], sandbox.stats.token_requests[other]) == (2, 2)
    assert assertion.fetches == 1


def test_a_provider_takes_a_secret_or_an_assertion_not_both_nor_neither() -> None:
    secrets = CachedSecrets(EnvironmentSecrets({}), ttl_seconds=1)
    assertion = ManagedIdentityAssertion(client_id="c")
    with pytest.raises(ValueError, match="either"):
        TokenProvider(authority="https://login.example/t", client_id="c")
    with pytest.raises(ValueError, match="either"):
        TokenProvider(
            authority="https://login.example/t",
            client_id="c",
            secret_name="entra-client-secret",
            secrets=secrets,
            assertion=assertion,
        )


@pytest.mark.parametrize(
    ("host", "audience"),
    [
        ("https://login.microsoftonline.com", "api://AzureADTokenExchange"),
        ("https://login.microsoftonline.us", "api://AzureADTokenExchangeUSGov"),
        ("https://LOGIN.chinacloudapi.cn/", "api://AzureADTokenExchangeChina"),
        ("https://login.partner.microsoftonline.cn", "api://AzureADTokenExchangeChina"),
        ("https://127.0.0.1:7443/entra", "api://AzureADTokenExchange"),
    ],
)
def test_the_exchange_audience_follows_the_cloud(host: str, audience: str) -> None:
    assert token_exchange_audience(host) == audience


def _refused(error: str, code: int) -> dict[str, Any]:
    return {
        "error": error,
        "error_description": f"AADSTS{code}: something.\r\nTrace ID: t",
        "error_codes": [code],
        "correlation_id": "c0rr",
    }


async def test_each_refusal_says_what_to_check(make_assertion: Any) -> None:
    assertion = make_assertion()
    await assertion.refresh()
    missing = assertion.refusal("app-1", SCOPE, _refused("unauthorized_client", 700016))
    assert "ENTRA_CLIENT_ID" in str(missing) and "app-1" in str(missing)
    assert isinstance(missing, FederationError) and missing.code == 700016
    assert missing.correlation_id == "c0rr"
    assert "Trace ID" not in str(missing), "Entra's text up to its first line only"
    scope = assertion.refusal("app-1", SCOPE, _refused("invalid_scope", 1002012))
    assert "Federated credentials" not in str(scope), "a wrong scope is no federation problem"
    assert assertion.presented() is not None
    expired = assertion.refusal("app-1", SCOPE, _refused("invalid_client", 700024))
    assert "valid time range" in str(expired)
    assert assertion.presented() is None, "an expired token is not presented again"


# ----- settings and the runtime


def test_federated_needs_the_identitys_client_id(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "ENTRA_TENANT_ID": "t",
        "ENTRA_CLIENT_ID": "c",
        "RETAIL_SERVER_URL": "https://rs.example",
        "OPERATING_UNIT_NUMBERS": "128",
        "ENTRA_CREDENTIAL": "federated",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AZURE_CLIENT_ID", raising=False)
    with pytest.raises(SettingsError, match="AZURE_CLIENT_ID"):
        load_settings()
    monkeypatch.setenv("AZURE_CLIENT_ID", "3f1d2c4b-7a8e-4c9d-9b1a-51d365c0ffee")
    assert load_settings().azure_client_id == "3f1d2c4b-7a8e-4c9d-9b1a-51d365c0ffee"
    monkeypatch.delenv("ENTRA_CREDENTIAL")
    assert load_settings().entra_credential == "secret", "local runs and the sandbox default to a secret"


async def test_the_runtime_builds_the_assertion_only_when_federated(
    sandbox: Sandbox, tmp_path: Path, identity_env: None
) -> None:
    secret = sandbox_settings(sandbox, tmp_path)
    federated: Settings = sandbox_settings(
        sandbox, tmp_path, entra_credential="federated", azure_client_id=sandbox.managed_identity.client_id
    )
    assert "azure.identity.aio" in sdk_modules(federated)
    for settings, expected in ((secret, False), (federated, True)):
        runtime = Runtime.create(settings)
        try:
            assert (runtime.assertion is not None) == expected
        finally:
            await runtime.close()
