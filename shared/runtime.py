"""Process-wide resources, created lazily once on first use and shared by every invocation.

The Functions worker owns the event loop and imports ``function_app.py`` before it runs, so
nothing asynchronous may happen at import time: the first invocation builds the runtime under a
lock, and every later one reuses the same HTTP session, token provider and store.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import logging
from typing import TYPE_CHECKING, Any

from shared.caller_auth import CallerVerifier, EntraTokenValidator
from shared.http import HttpClient, RetryPolicy, build_ssl_context, new_session
from shared.identity import TokenProvider
from shared.secrets import CachedSecrets, KeyVaultOptions, secret_source
from shared.settings import Settings, get_settings
from shared.state.sqlite import SqliteStore
from shared.state.store import DocumentStore
from shared.state.traced import TracedStore

if TYPE_CHECKING:
    import aiohttp
    from azure.core.credentials_async import AsyncTokenCredential

    from shared.managed_identity import ManagedIdentityAssertion
    from shared.retail_server.client import RetailServerClient

    # The Cosmos DB SDK (about 30 ms to import) loads only when the store is Cosmos DB.
    from shared.state.cosmos import CosmosLimits

logger = logging.getLogger(__name__)


class Runtime:
    def __init__(
        self,
        settings: Settings,
        *,
        http: HttpClient,
        secrets: CachedSecrets,
        tokens: TokenProvider,
        store: DocumentStore,
        assertion: ManagedIdentityAssertion | None = None,
    ) -> None:
        self.settings = settings
        self.http = http
        self.secrets = secrets
        self.tokens = tokens
        self.store = store
        # ENTRA_CREDENTIAL=federated: the managed identity's token, shared by every app registration.
        self.assertion = assertion
        self._retail: RetailServerClient | None = None
        # Feature-owned, lazily built singletons (email provider, F&O client, caches) live here.
        self.extras: dict[str, Any] = {}
        self._callers: CallerVerifier | None = None

    @property
    def retail(self) -> RetailServerClient:
        """The Retail Server client, built on first use: CreateCustomer never needs its models."""
        if self._retail is None:
            from shared.retail_server.client import RetailServerClient

            self._retail = RetailServerClient(
                self.http,
                self.tokens,
                base_url=self.settings.retail_server_url,
                audience=self.settings.retail_server_audience,
                api_version=self.settings.retail_server_api_version,
            )
        return self._retail

    @property
    def callers(self) -> CallerVerifier:
        """Verifies the callers of the HTTP endpoints; built on first use (no I/O until a token comes)."""
        if self._callers is None:
            audiences = self.settings.api_audiences
            validator = (
                EntraTokenValidator(self.http, authority=self.settings.authority, audiences=audiences)
                if audiences
                else None
            )
            self._callers = CallerVerifier(validator)
        return self._callers

    @classmethod
    def create(
        cls,
        settings: Settings,
        *,
        key_vault_credential: AsyncTokenCredential | None = None,
        verify_key_vault_challenge: bool = True,
    ) -> Runtime:
        """The runtime for ``settings``. The Key Vault keywords are for a vault that is not Azure's
        (the sandbox's): a credential of its own, and no check of its challenge's domain."""
        session = new_session(
            total_timeout=settings.http_timeout_seconds,
            connect_timeout=settings.http_connect_timeout_seconds,
            ssl_context=build_ssl_context(settings.extra_ca_bundle),
        )
        http = HttpClient(
            session,
            RetryPolicy(
                max_attempts=settings.http_max_attempts,
                backoff_base=settings.http_backoff_base_seconds,
                backoff_max=settings.http_backoff_max_seconds,
            ),
            max_response_bytes=settings.max_response_bytes,
        )
        key_vault = KeyVaultOptions(
            timeout_seconds=settings.key_vault_timeout_seconds,
            connect_timeout_seconds=min(
                settings.http_connect_timeout_seconds, settings.key_vault_timeout_seconds
            ),
            max_attempts=settings.key_vault_max_attempts,
            credential=key_vault_credential,
            verify_challenge_resource=verify_key_vault_challenge,
        )
        secrets = secret_source(
            settings.key_vault_url, settings.secret_cache_ttl_seconds, options=key_vault, session=session
        )
        assertion = managed_identity_assertion(settings, session)
        tokens = TokenProvider(
            authority=settings.authority,
            client_id=settings.entra_client_id,
            **entra_credential(settings, settings.entra_client_secret_name, secrets, assertion),
            extra_ca_bundle=settings.extra_ca_bundle,
            timeout_seconds=settings.http_timeout_seconds,
        )
        return cls(
            settings,
            http=http,
            secrets=secrets,
            tokens=tokens,
            store=create_store(settings),
            assertion=assertion,
        )

    async def close(self) -> None:
        # Feature singletons first (they may flush through the session), then the shared resources.
        for name, resource in list(self.extras.items()):
            closer = getattr(resource, "close", None)
            if closer is None:
                continue
            try:
                result = closer()
                if inspect.isawaitable(result):
                    await result
            except Exception as exc:
                logger.warning("closing %s failed: %s", name, type(exc).__name__)
        self.extras.clear()
        if self._callers is not None:
            self._callers.close()
        await self.http.session.close()
        await self.store.close()
        await self.secrets.close()
        self.tokens.close()
        if self.assertion is not None:
            await self.assertion.close()


def managed_identity_assertion(
    settings: Settings, session: aiohttp.ClientSession
) -> ManagedIdentityAssertion | None:
    """With ``ENTRA_CREDENTIAL=federated``, the managed identity's token source (no I/O yet)."""
    if settings.entra_credential != "federated":
        return None
    from shared.managed_identity import ManagedIdentityAssertion, token_exchange_audience

    assert settings.azure_client_id is not None  # checked by Settings
    return ManagedIdentityAssertion(
        client_id=settings.azure_client_id,
        audience=token_exchange_audience(settings.entra_authority_host),
        session=session,
        timeout_seconds=settings.http_timeout_seconds,
        connect_timeout_seconds=settings.http_connect_timeout_seconds,
        max_attempts=settings.http_max_attempts,
        backoff_base_seconds=settings.http_backoff_base_seconds,
        backoff_max_seconds=settings.http_backoff_max_seconds,
    )


def entra_credential(
    settings: Settings,
    secret_name: str,
    secrets: CachedSecrets,
    assertion: ManagedIdentityAssertion | None,
) -> dict[str, Any]:
    """A TokenProvider's credential keywords: the managed identity's assertion when federated
    (no secret is read), else the named client secret."""
    if settings.entra_credential == "federated":
        assert assertion is not None
        return {"assertion": assertion}
    return {"secret_name": secret_name, "secrets": secrets}


def create_store(settings: Settings) -> DocumentStore:
    """The configured store, each of its calls a client span (``shared/state/traced.py``)."""
    if settings.state_store == "cosmos":
        from shared.state.cosmos import CosmosStore

        assert settings.cosmos_endpoint is not None  # checked by Settings
        cosmos = CosmosStore.connect(
            settings.cosmos_endpoint,
            settings.cosmos_database,
            {"ledger": settings.cosmos_ledger_container, "state": settings.cosmos_state_container},
            limits=cosmos_limits(settings),
        )
        return TracedStore(cosmos, system="cosmosdb")
    return TracedStore(SqliteStore(settings.sqlite_path), system="sqlite")


def cosmos_limits(settings: Settings) -> CosmosLimits:
    from shared.state.cosmos import CosmosLimits

    return CosmosLimits(
        timeout_seconds=settings.cosmos_timeout_seconds,
        connect_timeout_seconds=min(settings.http_connect_timeout_seconds, settings.cosmos_timeout_seconds),
        max_attempts=settings.cosmos_max_attempts,
    )


_runtime: Runtime | None = None
_lock: asyncio.Lock | None = None


async def get_runtime() -> Runtime:
    global _runtime, _lock
    if _runtime is not None:
        return _runtime
    if _lock is None:
        _lock = asyncio.Lock()
    async with _lock:
        if _runtime is None:
            settings = get_settings()
            # The SDKs load on first use; this first use imports them on a worker thread, so the
            # ~100 ms or more it takes does not hold up the event loop (and the invocations on it).
            await asyncio.to_thread(import_sdks, settings)
            _runtime = Runtime.create(settings)
        return _runtime


def sdk_modules(settings: Settings) -> list[str]:
    """The modules the runtime for ``settings`` needs that ``import function_app`` leaves out.
    MSAL is not among them: it loads on the worker thread that asks for the first token."""
    names = ["aiohttp"]
    if settings.key_vault_url:
        names += ["azure.identity.aio", "azure.keyvault.secrets.aio"]
    if settings.state_store == "cosmos":
        names += ["azure.identity.aio", "azure.cosmos.aio"]
    if settings.api_audiences:
        names.append("jwt")
    if settings.entra_credential == "federated":
        names.append("azure.identity.aio")
    return names


def import_sdks(settings: Settings) -> None:
    for name in sdk_modules(settings):
        importlib.import_module(name)


def set_runtime(runtime: Runtime | None) -> None:
    """Replace the process runtime (tests, the demo)."""
    global _runtime, _lock
    _runtime = runtime
    _lock = None


async def close_runtime() -> None:
    global _runtime
    if _runtime is not None:
        await _runtime.close()
    set_runtime(None)
