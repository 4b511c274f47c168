"""Secrets by name: Key Vault when ``KEY_VAULT_URL`` is set, environment variables otherwise.

Values are cached for ``SECRET_CACHE_TTL_SECONDS`` so a rotated secret is picked up without a
restart, while a busy instance does not call Key Vault on every invocation. A secret's environment
fallback is its name upper-cased with dashes as underscores (``entra-client-secret`` ->
``ENTRA_CLIENT_SECRET``), the form Key Vault names cannot take and app settings must.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Mapping
from typing import Protocol

from azure.core.exceptions import ResourceNotFoundError
from azure.identity.aio import DefaultAzureCredential
from azure.keyvault.secrets.aio import SecretClient


class SecretNotFoundError(LookupError):
    """The named secret does not exist (or has no value). The message names it, never a value."""


class SecretSource(Protocol):
    async def get(self, name: str) -> str: ...

    async def close(self) -> None: ...


def env_name_for(secret_name: str) -> str:
    return secret_name.upper().replace("-", "_")


class EnvironmentSecrets:
    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._environ = environ if environ is not None else os.environ

    async def get(self, name: str) -> str:
        value = self._environ.get(env_name_for(name))
        if not value:
            raise SecretNotFoundError(
                f"secret {name!r} is not set: set the environment variable {env_name_for(name)} "
                "or KEY_VAULT_URL to read it from Key Vault"
            )
        return value

    async def close(self) -> None:
        return None


class KeyVaultSecrets:
    def __init__(self, vault_url: str, client: SecretClient | None = None) -> None:
        self._vault_url = vault_url
        self._credential: DefaultAzureCredential | None = None
        if client is None:
            self._credential = DefaultAzureCredential()
            client = SecretClient(vault_url=vault_url, credential=self._credential)
        self._client = client

    async def get(self, name: str) -> str:
        try:
            secret = await self._client.get_secret(name)
        except ResourceNotFoundError:
            raise SecretNotFoundError(f"secret {name!r} is not in Key Vault {self._vault_url}") from None
        if not secret.value:
            raise SecretNotFoundError(f"secret {name!r} in Key Vault {self._vault_url} has no value")
        return secret.value

    async def close(self) -> None:
        await self._client.close()
        if self._credential is not None:
            await self._credential.close()


class CachedSecrets:
    """A TTL cache in front of another source; concurrent readers of one name share one fetch."""

    def __init__(self, source: SecretSource, ttl_seconds: float, clock: Callable[[], float] = time.monotonic):
        self._source = source
        self._ttl = ttl_seconds
        self._clock = clock
        self._values: dict[str, tuple[str, float]] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def get(self, name: str) -> str:
        cached = self._values.get(name)
        if cached is not None and cached[1] > self._clock():
            return cached[0]
        lock = self._locks.setdefault(name, asyncio.Lock())
        async with lock:
            cached = self._values.get(name)
            if cached is not None and cached[1] > self._clock():
                return cached[0]
            value = await self._source.get(name)
            self._values[name] = (value, self._clock() + self._ttl)
            return value

    def invalidate(self, name: str) -> None:
        """Forget a value, e.g. after an upstream rejected it as no longer valid."""
        self._values.pop(name, None)

    async def close(self) -> None:
        await self._source.close()


def secret_source(key_vault_url: str | None, ttl_seconds: float) -> CachedSecrets:
    source: SecretSource = KeyVaultSecrets(key_vault_url) if key_vault_url else EnvironmentSecrets()
    return CachedSecrets(source, ttl_seconds)
