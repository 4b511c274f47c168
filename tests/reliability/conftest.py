"""The fault matrix's fixtures: one sandbox for the whole module (every stand-in mounted), and a
report hook that writes each cell's observed outcome to ``$RELIABILITY_REPORT`` (JSON lines)."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Generator
from typing import Any

import aiohttp
import pytest

from sandbox.server import Sandbox
from shared.http import new_session
from shared.identity import TokenProvider
from shared.secrets import CachedSecrets, EnvironmentSecrets
from tests.notify.conftest import NOW
from tests.reliability.harness import EXTENSIONS, FAST, Observation

REPORT_ENV = "RELIABILITY_REPORT"
OBSERVED = pytest.StashKey[Observation]()


@pytest.fixture(scope="module")
async def sandbox() -> AsyncIterator[Sandbox]:
    # Named like the shared fixture, so the log privacy guard checks every cell too.
    async with Sandbox(seed=42, now=NOW, extensions=EXTENSIONS) as running:
        yield running


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Generator[None, Any, Any]:
    report = yield
    target = os.environ.get(REPORT_ENV)
    cell = getattr(getattr(item, "callspec", None), "params", {}).get("cell")
    # Only the call phase: a cell whose setup failed never ran, and the report says so.
    if not target or cell is None or report.when != "call":
        return report
    observed = item.stash.get(OBSERVED, None)
    result = "xfailed" if hasattr(report, "wasxfail") and report.skipped else report.outcome
    if hasattr(report, "wasxfail") and report.passed:
        result = "xpassed"
    line = {
        "cell": cell.id,
        "row": cell.row.id,
        "fault": cell.fault.value,
        "variant": cell.variant.value,
        "expected": cell.expect.label if cell.expect else None,
        "pendingItem": cell.expect.pending_item if cell.expect else None,
        "result": result,
        "seconds": round(report.duration, 3),
        "observed": observed.to_json() if observed is not None else None,
    }
    with open(target, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(line) + "\n")
    return report


@pytest.fixture(scope="module")
def warm_tokens(sandbox: Sandbox) -> Generator[TokenProvider, None, None]:
    """The token provider of a warm instance, shared by the cells that are not about Entra ID."""
    secrets = CachedSecrets(EnvironmentSecrets({"ENTRA_CLIENT_SECRET": sandbox.client_secret}), 300)
    tokens = TokenProvider(
        authority=sandbox.authority,
        client_id=sandbox.client_id,
        secret_name="entra-client-secret",
        secrets=secrets,
        extra_ca_bundle=sandbox.ca_path,
        timeout_seconds=5,
    )
    yield tokens
    tokens.close()


@pytest.fixture(scope="module")
async def warm_session(sandbox: Sandbox) -> AsyncIterator[aiohttp.ClientSession]:
    """The HTTP session of a warm instance, with the matrix's short client timeouts."""
    session = new_session(
        total_timeout=FAST["http_timeout_seconds"],
        connect_timeout=FAST["http_connect_timeout_seconds"],
        ssl_context=sandbox.client_ssl_context(),
    )
    yield session
    await session.close()
