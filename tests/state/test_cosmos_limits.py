"""Every Cosmos DB operation is bounded: the client is built with the settings' timeouts and
attempts, each operation carries a deadline, and a hanging account ends in a timeout error."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from azure.core.exceptions import AzureError, ServiceResponseError

from sandbox.keyvault import SandboxCredential
from sandbox.server import Sandbox
from shared.runtime import Runtime
from shared.settings import Settings
from shared.state.cosmos import CosmosLimits, CosmosStore


class _NoCredential:
    """Never asked for a token: these tests build clients without calling them."""

    async def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        raise AssertionError("no request was expected")

    async def close(self) -> None:
        return None


def _policy(store: Any) -> Any:
    return store._containers["ledger"].client_connection.connection_policy


async def test_the_runtime_builds_the_cosmos_client_from_the_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("azure.identity.aio.DefaultAzureCredential", _NoCredential)
    settings = Settings(
        entra_tenant_id="tenant",
        entra_client_id="client",
        retail_server_url="https://contoso.commerce.dynamics.com",
        operating_unit_numbers="128",
        state_store="cosmos",
        cosmos_endpoint="https://cosmos-abc.documents.azure.com:443/",
        cosmos_timeout_seconds=4,
        cosmos_max_attempts=2,
        http_connect_timeout_seconds=3,
        sqlite_path=tmp_path / "unused.sqlite3",
    )
    runtime = Runtime.create(settings)
    try:
        cosmos = runtime.store.inner  # type: ignore[attr-defined]  # under its TracedStore
        policy = _policy(cosmos)
        # The SDK's defaults: 65 s per read, 9 throttling retries over up to 30 s, 3 connection retries.
        assert (policy.RequestTimeout, policy.ReadTimeout) == (3, 4)
        assert policy.RetryOptions._max_retry_attempt_count == 1
        assert policy.RetryOptions._max_wait_time_in_seconds == 4
        retry = policy.ConnectionRetryConfiguration
        assert (retry.total_retries, retry.connect_retries, retry.read_retries) == (1, 1, 1)
        # And each operation's absolute deadline, retries included.
        assert cosmos._deadline == {"timeout": 8}
    finally:
        await runtime.close()


def test_the_defaults_are_bounded() -> None:
    limits = CosmosLimits()
    options = limits.client_options()
    assert options["read_timeout"] <= 10 and options["retry_total"] <= 2
    assert limits.operation_seconds <= 30


def _cosmos_account(app: web.Application, sandbox: Sandbox) -> None:
    """Just enough of a Cosmos DB gateway for the SDK to start: its database-account document."""

    async def account(request: web.Request) -> web.Response:
        endpoint = {"name": "Sandbox", "databaseAccountEndpoint": f"{sandbox.base_url}/"}
        return web.json_response(
            {
                "id": "sandbox",
                "_rid": "sandbox.documents.azure.com",
                "_dbs": "//dbs/",
                "writableLocations": [endpoint],
                "readableLocations": [endpoint],
                "enableMultipleWriteLocations": False,
                "userConsistencyPolicy": {"defaultConsistencyLevel": "Session"},
                "userReplicationPolicy": {"minReplicaSetSize": 1, "maxReplicasetSize": 4},
                "systemReplicationPolicy": {"minReplicaSetSize": 1, "maxReplicasetSize": 4},
                "readPolicy": {"primaryReadCoefficient": 1, "secondaryReadCoefficient": 1},
                "queryEngineConfiguration": "{}",
            }
        )

    app.router.add_get("/", account)


async def test_a_hanging_account_ends_in_a_timeout_error() -> None:
    async with Sandbox(seed=1, extensions=[_cosmos_account]) as sandbox:
        sandbox.faults.add("/dbs", timeout=True, times=None)
        store = CosmosStore.connect(
            f"{sandbox.base_url}/",
            "commerce-connector",
            {"ledger": "ledger", "state": "state"},
            limits=CosmosLimits(timeout_seconds=0.3, connect_timeout_seconds=0.3, max_attempts=2),
            credential=SandboxCredential(sandbox),
        )
        try:
            with pytest.raises(AzureError) as caught:
                await store.read("ledger", "cart-1", "v1|1")
        finally:
            await store.close()
        assert isinstance(caught.value, ServiceResponseError), type(caught.value)
        # Two attempts, as configured; the SDK's default would have waited 65 s on each of more.
        held = [route for route in sandbox.stats.requests if route.startswith("GET /dbs/")]
        assert sum(sandbox.stats.requests[route] for route in held) == 2
