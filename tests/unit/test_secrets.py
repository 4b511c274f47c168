from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest
from azure.core.exceptions import ResourceNotFoundError

from shared.secrets import (
    CachedSecrets,
    EnvironmentSecrets,
    KeyVaultSecrets,
    SecretNotFoundError,
    env_name_for,
)


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
