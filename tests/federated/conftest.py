"""Fixtures for ENTRA_CREDENTIAL=federated: the sandbox with its managed-identity endpoint (and the
order-search and F&O stand-ins), the platform's IDENTITY_* variables pointing at it, no client
secret anywhere, and helpers to run the registered timer and HTTP functions."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from sandbox import fno, orders
from sandbox.managed_identity import TOKEN_EXCHANGE_AUDIENCE
from sandbox.server import Sandbox
from shared.settings import Settings
from tests.conftest import sandbox_settings

# The customer tests' request body (a seeded customer's name with a new email and phone).
from tests.customers.conftest import extra_personal_data, payload, seeded_person  # noqa: F401
from tests.customers.helpers import call, http_request
from tests.notify.conftest import NOTIFY_SETTINGS, NOW, clock, recorder  # noqa: F401 (fixtures)


@pytest.fixture
async def sandbox() -> AsyncIterator[Sandbox]:
    async with Sandbox(seed=42, now=NOW, extensions=[orders.add_routes, fno.add_routes]) as running:
        yield running


@pytest.fixture
def federated_overrides() -> dict[str, Any]:
    """Per-test settings on top of the federated ones (override in a test module)."""
    return {}


@pytest.fixture
def settings(
    sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, federated_overrides: dict[str, Any]
) -> Settings:
    # No client secret anywhere: reading one would fail the test.
    monkeypatch.delenv("ENTRA_CLIENT_SECRET", raising=False)
    monkeypatch.delenv("FNO_CLIENT_SECRET", raising=False)
    # What the platform sets for a function app with a managed identity.
    for name, value in sandbox.managed_identity.env().items():
        monkeypatch.setenv(name, value)
    values: dict[str, Any] = {
        **NOTIFY_SETTINGS,
        "preview_dir": tmp_path / "previews",
        "entra_credential": "federated",
        "azure_client_id": sandbox.managed_identity.client_id,
        "fno_url": fno.fno_url(sandbox),
        **federated_overrides,
    }
    return sandbox_settings(sandbox, tmp_path, **values)


def identity_tokens(sandbox: Sandbox) -> int:
    """How many tokens the managed-identity endpoint issued for the token exchange."""
    return sandbox.managed_identity.issued[TOKEN_EXCHANGE_AUDIENCE]


async def create_customer(functions: dict[str, Any], body: dict[str, Any], **headers: str) -> Any:
    return await call(functions, "create_customer", http_request("customers", body, headers=headers))
