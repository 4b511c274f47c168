from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

import pytest
from azure.core.exceptions import ResourceNotFoundError
from azure.core.pipeline.policies import AsyncRetryPolicy

from shared.runtime import Runtime
from shared.secrets import (
    CachedSecrets,
    EnvironmentSecrets,
    KeyVaultSecrets,
    SecretNotFoundError,
    env_name_for,
)
from shared.settings import Settings


@dataclass
class FakeSecret:
    value: str | None


class FakeSecretClient:
    """The part of ``azure.keyvault.secrets.aio.SecretClient`` the adapter uses."""

    def __init__(self) -> None:
        self.values: dict[str, str] = {}
        self.calls = 0

    async def get_secret(self, name: str) -> FakeSecret:
        self.calls += 1
        await asyncio.sleep(0)
        if name not in self.values:
            raise ResourceNotFoundError("SecretNotFound")
        return FakeSecret(self.values[name])

    async def close(self) -> None:
        return None


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_key_vault_values_are_cached_and_rotation_is_picked_up() -> None:
    client = FakeSecretClient()
    client.values["entra-client-secret"] = "v1"
    clock = Clock()
    secrets = CachedSecrets(KeyVaultSecrets("https://kv.vault.azure.net", client=client), 300, clock=clock)  # type: ignore[arg-type]
    values = await asyncio.gather(*(secrets.get("entra-client-secret") for _ in range(5)))
    assert values == ["v1"] * 5
    assert client.calls == 1, "concurrent readers share one Key Vault call"
    client.values["entra-client-secret"] = "v2"
    clock.now = 299
    assert await secrets.get("entra-client-secret") == "v1"
    clock.now = 301
    assert await secrets.get("entra-client-secret") == "v2"


async def test_missing_secret_names_it_and_where() -> None:
    secrets = KeyVaultSecrets("https://kv.vault.azure.net", client=FakeSecretClient())  # type: ignore[arg-type]
    with pytest.raises(SecretNotFoundError, match="'emarsys-secret' is not in Key Vault"):
        await secrets.get("emarsys-secret")


async def test_environment_fallback() -> None:
    assert env_name_for("entra-client-secret") == "ENTRA_CLIENT_SECRET"
    secrets = EnvironmentSecrets({"ENTRA_CLIENT_SECRET": "local"})
    assert await secrets.get("entra-client-secret") == "local"
    with pytest.raises(SecretNotFoundError, match="environment variable OTHER"):
        await secrets.get("other")


class _NoCredential:
    """Never asked for a token: the test builds the client without calling it."""

    async def get_token(self, *scopes: str, **kwargs: object) -> object:
        raise AssertionError("no request was expected")

    async def close(self) -> None:
        return None


async def test_the_runtime_builds_a_bounded_key_vault_client(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The SDK's defaults wait 300 s per attempt and retry 10 times; the settings bound both."""
    monkeypatch.setattr("azure.identity.aio.DefaultAzureCredential", _NoCredential)
    settings = Settings(
        entra_tenant_id="tenant",
        entra_client_id="client",
        retail_server_url="https://contoso.commerce.dynamics.com",
        operating_unit_numbers="128",
        key_vault_url="https://kv-abc.vault.azure.net",
        key_vault_timeout_seconds=4,
        key_vault_max_attempts=2,
        http_connect_timeout_seconds=3,
        sqlite_path=tmp_path / "state.sqlite3",
    )
    runtime = Runtime.create(settings)
    try:
        source = runtime.secrets._source
        assert isinstance(source, KeyVaultSecrets)
        pipeline = source._client._client._client._pipeline
        transport = pipeline._transport
        # The process's one session, with the app's trust store.
        assert transport.session is runtime.http.session
        assert (transport.connection_config.timeout, transport.connection_config.read_timeout) == (3, 4)
        retry = next(p for p in pipeline._impl_policies if isinstance(p, AsyncRetryPolicy))
        retries = (retry.total_retries, retry.connect_retries, retry.read_retries, retry.status_retries)
        assert retries == (1, 1, 1, 1)
        assert retry.backoff_max <= 2
    finally:
        await runtime.close()
