"""Lazy start-up, pinned by what is loaded, never by time: ``import function_app`` loads
no SDK that only a first call needs, and the first runtime loads the ones it needs on a worker
thread before it is built, so building it imports none of them on the event loop.

Each check runs in a fresh interpreter: this one has long since imported everything.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.unit.fresh_interpreter import run_python

# Loaded on first use only. hypothesis is a test tool: the app must never import it.
LAZY = (
    "aiohttp",
    "azure.core",
    "azure.cosmos",
    "azure.identity",
    "azure.keyvault",
    "cryptography",
    "email_validator",
    "hypothesis",
    "jwt",
    "msal",
    "requests",
    # OpenTelemetry's SDK and the Azure Monitor distro load only when APPLICATIONINSIGHTS_CONNECTION_STRING
    # is set; the API, which records nothing without them, is light and always there.
    "opentelemetry.sdk",
    "azure.monitor",
    "azure.storage",
    # The email providers other than the preview: only the configured one is ever imported.
    "shared.email.emarsys",
    "shared.email.emarsys_auth",
    "shared.email.sendgrid",
    "shared.email.webhook",
)


def _heavy(modules: list[str]) -> list[str]:
    return sorted(m for m in modules if any(m == lazy or m.startswith(lazy + ".") for lazy in LAZY))


def _run(code: str) -> dict[str, list[str]]:
    result: dict[str, list[str]] = json.loads(run_python(code))
    return result


@pytest.fixture(scope="module")
def app_modules() -> list[str]:
    """The modules a fresh interpreter has loaded after ``import function_app``."""
    loaded = _run(
        """
        import json, sys
        import function_app
        print(json.dumps({"modules": sorted(sys.modules)}))
        """
    )
    return loaded["modules"]


def test_importing_the_app_loads_no_sdk_that_only_a_first_call_needs(app_modules: list[str]) -> None:
    assert _heavy(app_modules) == []


# The cart pipeline loads with the first detection or notify invocation: an instance woken by a
# till's CreateCustomer call never waits for its models, ledger or Retail Server client.
PIPELINE = (
    "shared.abandoned_carts.detect",
    "shared.abandoned_carts.notify",
    "shared.abandoned_carts.enrich",
    "shared.retail_server.client",
    "shared.state.ledger",
)


def test_importing_the_app_loads_no_part_of_the_cart_pipeline(app_modules: list[str]) -> None:
    assert sorted(set(PIPELINE) & set(app_modules)) == []


def test_a_create_customer_call_loads_no_part_of_the_cart_pipeline(tmp_path: Path) -> None:
    loaded = _run(
        f"""
        import asyncio, json, sys
        import function_app
        from shared.runtime import Runtime
        from shared.settings import Settings

        settings = Settings(
            entra_tenant_id="tenant",
            entra_client_id="client",
            retail_server_url="https://contoso.commerce.dynamics.com",
            operating_unit_numbers="128",
            fno_url="https://contoso.operations.dynamics.com",
            sqlite_path={str(tmp_path / "state.sqlite3")!r},
        )

        async def build() -> None:
            runtime = Runtime.create(settings)
            from shared.customers import service  # what the CreateCustomer function runs
            await runtime.close()

        asyncio.run(build())
        print(json.dumps({{"modules": sorted(sys.modules)}}))
        """
    )
    assert sorted(set(PIPELINE) & set(loaded["modules"])) == []


def test_the_first_runtime_loads_its_sdks_before_it_is_built(tmp_path: Path) -> None:
    """Every SDK that building the runtime (Key Vault, Cosmos DB, the session) or checking a caller's
    token needs is in :func:`shared.runtime.sdk_modules`, which ``get_runtime`` imports on a
    worker thread before it builds the runtime on the event loop."""
    loaded = _run(
        f"""
        import asyncio, json, sys
        import function_app
        from shared.runtime import Runtime, import_sdks
        from shared.settings import Settings

        settings = Settings(
            entra_tenant_id="tenant",
            entra_client_id="client",
            retail_server_url="https://contoso.commerce.dynamics.com",
            operating_unit_numbers="128",
            key_vault_url="https://kv-abc.vault.azure.net",
            state_store="cosmos",
            cosmos_endpoint="https://cosmos-abc.documents.azure.com:443/",
            api_client_id="11111111-2222-3333-4444-555555555555",
            sqlite_path={str(tmp_path / "state.sqlite3")!r},
        )
        import_sdks(settings)
        preloaded = set(sys.modules)

        async def build() -> None:
            runtime = Runtime.create(settings)
            runtime.callers
            await runtime.close()

        asyncio.run(build())
        print(json.dumps({{
            "preloaded": sorted(preloaded),
            "built": sorted(set(sys.modules) - preloaded),
        }}))
        """
    )
    preloaded = _heavy(loaded["preloaded"])
    for sdk in ("aiohttp", "azure.cosmos.aio", "azure.identity.aio", "azure.keyvault.secrets.aio", "jwt"):
        assert sdk in preloaded
    # Building loads a few of their internals (the managed-identity client, about 3 ms), never
    # one of the packages themselves.
    roots = {
        *LAZY,
        "azure.cosmos.aio",
        "azure.identity.aio",
        "azure.keyvault.secrets",
        "azure.keyvault.secrets.aio",
    }
    assert sorted(roots & set(loaded["built"])) == []
