"""Secrets by name: Key Vault when ``KEY_VAULT_URL`` is set, environment variables otherwise.

Values are cached for ``SECRET_CACHE_TTL_SECONDS`` so a rotated secret is picked up without a
restart, while a busy instance does not call Key Vault on every invocation. A secret's environment
fallback is its name upper-cased with dashes as underscores (``entra-client-secret`` ->
``ENTRA_CLIENT_SECRET``), the form Key Vault names cannot take and app settings must.

Every Key Vault read is bounded (invariant 11): each attempt has a connect and a read timeout and
the attempts are few (``KEY_VAULT_TIMEOUT_SECONDS``, ``KEY_VAULT_MAX_ATTEMPTS``), where the SDK's
defaults wait 300 s per attempt and retry up to 10 times. A vault that does not answer within them
is :class:`SecretUnavailableError`, which callers treat as transient.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

from shared import telemetry

if TYPE_CHECKING:
    # The Key Vault SDK and azure-identity (with azure-core and cryptography) take about 80 ms to
    # import; they load when a Key Vault source is built, and never when secrets come from the
    # environment.
    import aiohttp
    from azure.core.credentials_async import AsyncTokenCredential
    from azure.keyvault.secrets.aio import SecretClient

logger = logging.getLogger(__name__)

# Between two attempts: a short wait, never the SDK's 120 s ceiling.
_BACKOFF_FACTOR_SECONDS = 0.4
_BACKOFF_MAX_SECONDS = 2.0


class SecretNotFoundError(LookupError):
    """The named secret does not exist (or has no value). The message names it, never a value."""


class SecretUnavailableError(Exception):
    """Key Vault did not answer in time or failed (timeouts, connection errors, 429 or 5xx, an
    answer that is not JSON or was cut short) after the bounded attempts. Transient: a later try
    may succeed. Names the secret, never a value."""


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


@dataclass(frozen=True)
class KeyVaultOptions:
    """How the Key Vault client waits, retries and signs in."""

    timeout_seconds: float = 5.0  # read timeout of one attempt
    connect_timeout_seconds: float = 5.0
    max_attempts: int = 3
    # None: DefaultAzureCredential (the app's managed identity in Azure), closed with the client.
    credential: AsyncTokenCredential | None = None
    # The SDK checks that the resource a vault's 401 challenge names is the vault's own domain.
    # Only a vault on a loopback address (the sandbox's) may turn it off: an address has no domain.
    verify_challenge_resource: bool = True

    def client_options(self) -> dict[str, Any]:
        """The azure-core transport and retry-policy keywords of SecretClient."""
        retries = self.max_attempts - 1
        return {
            "connection_timeout": self.connect_timeout_seconds,
            "read_timeout": self.timeout_seconds,
            "retry_total": retries,
            "retry_connect": retries,
            "retry_read": retries,
            "retry_status": retries,
            "retry_backoff_factor": _BACKOFF_FACTOR_SECONDS,
            "retry_backoff_max": _BACKOFF_MAX_SECONDS,
            "verify_challenge_resource": self.verify_challenge_resource,
        }


class KeyVaultSecrets:
    def __init__(
        self,
        vault_url: str,
        client: SecretClient | None = None,
        *,
        options: KeyVaultOptions | None = None,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self._vault_url = vault_url
        self._credential: AsyncTokenCredential | None = None
        if client is None:
            from azure.core.pipeline.transport import AioHttpTransport
            from azure.identity.aio import DefaultAzureCredential
            from azure.keyvault.secrets.aio import SecretClient

            options = options or KeyVaultOptions()
            credential = options.credential
            if credential is None:
                credential = self._credential = DefaultAzureCredential()
            keywords = options.client_options()
            if session is not None:
                # The process's own session (its trust store includes EXTRA_CA_BUNDLE), which the
                # client must not close. A transport built here takes the timeouts itself: the
                # client passes its keywords only to a transport it builds.
                keywords["transport"] = AioHttpTransport(
                    session=session,
                    session_owner=False,
                    connection_timeout=keywords["connection_timeout"],
                    read_timeout=keywords["read_timeout"],
                )
            client = SecretClient(vault_url=vault_url, credential=credential, **keywords)
        self._client = client

    async def get(self, name: str) -> str:
        """The secret's value; each read is a client span, and a failed one is counted and recorded
        by its reason (``not_found``, ``denied``, ``key_vault_unavailable``), never its value."""
        with telemetry.upstream_call(
            "Key Vault",
            "/secrets/{name}",
            method="GET",
            server=urlsplit(self._vault_url).hostname,
            attributes={"connector.secret": name},
        ) as call:
            try:
                return await self._read(name)
            except Exception as exc:
                reason = _failure_reason(exc)
                call.failed(reason)
                telemetry.SECRETS_FAILURES.add(1, {"reason": reason})
                logger.warning(
                    "secret read failed", extra={"event": "secret_failure", "reason": reason, "secret": name}
                )
                raise

    async def _read(self, name: str) -> str:
        from azure.core.exceptions import (
            DecodeError,
            HttpResponseError,
            ResourceNotFoundError,
            ServiceRequestError,
            ServiceResponseError,
        )

        try:
            secret = await self._client.get_secret(name)
        except ResourceNotFoundError:
            raise SecretNotFoundError(f"secret {name!r} is not in Key Vault {self._vault_url}") from None
        except (ServiceRequestError, ServiceResponseError) as exc:
            raise SecretUnavailableError(
                f"Key Vault {self._vault_url} did not answer for secret {name!r} ({type(exc).__name__})"
            ) from None
        except DecodeError as exc:
            # A body that is not JSON (a gateway's error page, a cut-short read): the SDK does not
            # retry it, but nothing says the next read will not be whole. 401/403 stay as raised:
            # the app's identity lacks access, which no retry fixes.
            raise SecretUnavailableError(
                f"Key Vault {self._vault_url} answered unreadably for secret {name!r} ({type(exc).__name__})"
            ) from None
        except HttpResponseError as exc:
            if exc.status_code == 429 or (exc.status_code or 0) >= 500:
                raise SecretUnavailableError(
                    f"Key Vault {self._vault_url} failed for secret {name!r} (HTTP {exc.status_code})"
                ) from None
            raise
        if not secret.value:
            raise SecretNotFoundError(f"secret {name!r} in Key Vault {self._vault_url} has no value")
        return secret.value

    async def close(self) -> None:
        await self._client.close()
        if self._credential is not None:
            await self._credential.close()


def _failure_reason(exc: Exception) -> str:
    if isinstance(exc, SecretNotFoundError):
        return "not_found"
    if isinstance(exc, SecretUnavailableError):
        return "key_vault_unavailable"
    status = getattr(exc, "status_code", None)
    if status in (401, 403):
        # The identity has no "Key Vault Secrets User" role on the vault (or the vault's firewall
        # refuses it): an operator's fix.
        return "denied"
    return telemetry.failure_status(exc)


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


def secret_source(
    key_vault_url: str | None,
    ttl_seconds: float,
    *,
    options: KeyVaultOptions | None = None,
    session: aiohttp.ClientSession | None = None,
) -> CachedSecrets:
    source: SecretSource = (
        KeyVaultSecrets(key_vault_url, options=options, session=session)
        if key_vault_url
        else EnvironmentSecrets()
    )
    return CachedSecrets(source, ttl_seconds)
