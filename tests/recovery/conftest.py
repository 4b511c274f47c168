"""Fixtures of the recovery tests: the notify fixtures (sandbox with orders, settings, recording
provider, clock), a holdout salt, bulk customers with one cart each, and helpers that run the
registered functions as the host would."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import azure.functions as func
import pytest
from azure.functions.timer import TimerRequest

from sandbox.data import BULK_NO_LINES, BULK_SECOND_CART, Cart
from sandbox.server import Sandbox
from shared.recovery.records import CART_KIND, CONVERSION_KIND, TrackedCart
from shared.runtime import Runtime
from tests.customers.test_openapi import check_response, load_spec
from tests.notify.conftest import (  # noqa: F401 (fixtures)
    NOW,
    Clock,
    notify_overrides,
    put_on_ledger,
    recorder,
    run_notify,
    sandbox,
    settings,
)

SALT = "sandbox-only~holdout-salt-of-32-bytes"


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    """Every invocation of notify, detection, tracking and the report runs at ``clock.now``."""
    fixed = Clock()
    monkeypatch.setattr("shared.abandoned_carts.blueprint.utcnow", fixed)
    monkeypatch.setattr("shared.recovery.blueprint.utcnow", fixed)
    return fixed


@pytest.fixture(autouse=True)
def holdout_salt(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOLDOUT_SALT", SALT)


def bulk_carts(running: Sandbox, count: int, oun: str = "128") -> list[Cart]:
    """``count`` carts with lines, each of its own customer (opted in, with an email address)."""
    bulk = running.data.add_bulk_carts(oun, count * 2)
    chosen = [
        running.data.bulk_cart(oun, i)
        for i in range(bulk.count)
        if i % BULK_NO_LINES != BULK_NO_LINES - 1 and i % BULK_SECOND_CART != BULK_SECOND_CART - 1
    ]
    return chosen[:count]


async def notify_all(functions: dict[str, Any], runtime: Runtime, carts: Sequence[Cart]) -> None:
    for cart in carts:
        queued = await put_on_ledger(runtime, cart)
        poison = await run_notify(functions, queued.body)
        assert poison.get() is None


async def track(functions: dict[str, Any], clock: Clock, at: datetime) -> None:
    clock.now = at
    await functions["track_conversions"].get_user_function()(TimerRequest(past_due=False))


async def tracked(runtime: Runtime) -> list[TrackedCart]:
    documents = await runtime.store.query("state", equals={"kind": CART_KIND}, limit=100_000)
    return [TrackedCart.model_validate(d.body) for d in documents]


async def conversions(runtime: Runtime) -> list[dict[str, Any]]:
    documents = await runtime.store.query("state", equals={"kind": CONVERSION_KIND}, limit=100_000)
    return [d.body for d in documents]


def report_request(**params: str) -> func.HttpRequest:
    return func.HttpRequest(method="GET", url="/api/reports/recovery", params=params, body=b"")


async def report(functions: dict[str, Any], **params: str) -> tuple[int, dict[str, Any]]:
    """The report's status and body, checked against its description in openapi.yaml."""
    response: func.HttpResponse = await functions["recovery_report"].get_user_function()(
        report_request(**params)
    )
    spec = load_spec()
    check_response(spec, spec["paths"]["/reports/recovery"]["get"], response)
    return response.status_code, json.loads(response.get_body())


def window(days: int = 1) -> dict[str, str]:
    """A report range around NOW."""
    return {
        "from": (NOW - timedelta(days=days)).date().isoformat(),
        "to": (NOW + timedelta(days=days)).date().isoformat(),
    }
