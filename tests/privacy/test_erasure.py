"""POST /api/privacy/erasure through the registered function."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from sandbox.server import Sandbox
from shared.privacy import erasure
from shared.privacy.erasure import COMMERCE_RETAINS
from shared.privacy.suppression import SuppressionList, email_hash
from shared.recovery.records import Conversion, RecoveryStore, TrackedCart, order_key
from shared.runtime import Runtime
from shared.state.ledger import Ledger, LedgerEntry
from tests.conftest import _Capture
from tests.privacy.helpers import bearer, call, erasure_request

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
PROBLEM = "application/problem+json"


def seeded(sandbox: Sandbox) -> tuple[str, str]:
    customer = next(c for c in sandbox.data.customers.values() if c.email)
    return customer.email, customer.account_number


async def record(runtime: Runtime, account: str, cart_id: str, oun: str, versions: int = 1) -> None:
    ledger = Ledger(runtime.store)
    for version in range(1, versions + 1):
        for step in (1, 2):
            entry = LedgerEntry(
                cart_id=cart_id,
                cart_version=version,
                step=step,
                oun=oun,
                customer_id=account,
                modified_at=NOW,
                due_at=NOW,
                updated_at=NOW,
            )
            assert await ledger.record(entry)
    await ledger.register_latest_cart(oun, account, cart_id, versions, NOW, now=NOW)
    await runtime.store.upsert("state", f"freqcap|{account}", "cap", {"kind": "frequency-cap"})


@pytest.fixture
def admin(sandbox: Sandbox) -> dict[str, str]:
    """The credentials of an admin tool that holds the erasure role."""
    return bearer(sandbox)


async def erase(functions: dict[str, Any], body: Any, headers: dict[str, str]) -> Any:
    return await call(functions, "privacy_erasure", erasure_request(body, **headers))


def counts(
    suppressed: bool, entries: int, pointers: int, previews: int = 0, recovery: int = 0
) -> dict[str, Any]:
    """The answer when the connector sends through the preview (nothing held by a provider)."""
    return {
        "suppressed": suppressed,
        "ledgerEntriesDeleted": entries,
        "pointersDeleted": pointers,
        "previewsDeleted": previews,
        "recoveryRecordsDeleted": recovery,
        "provider": {
            "name": "preview",
            "action": "not_applicable",
            "detail": "no email left the connector; its previews are in previewsDeleted",
        },
        "retained": [COMMERCE_RETAINS],
    }


def test_route_method_and_auth_level(registered_functions: dict[str, Any]) -> None:
    trigger = json.loads(registered_functions["privacy_erasure"].get_function_json())["bindings"][0]
    assert trigger["type"] == "httpTrigger" and trigger["route"] == "privacy/erasure"
    assert [m.upper() for m in trigger["methods"]] == ["POST"]
    assert trigger["authLevel"].upper() == "FUNCTION"


async def test_erasure_suppresses_the_address_and_deletes_the_accounts_documents(
    registered_functions: dict[str, Any], runtime: Runtime, sandbox: Sandbox, admin: dict[str, str]
) -> None:
    email, account = seeded(sandbox)
    await record(runtime, account, "cart-A", "128", versions=2)  # 4 entries
    await record(runtime, account, "cart-B", "129")  # 2 entries, a pointer in another channel
    await record(runtime, "OTHER-1", "cart-C", "128")  # someone else's: kept

    response = await erase(registered_functions, {"email": email, "customerAccount": account}, admin)

    assert response.status_code == 200, response.get_body()
    assert response.mimetype == "application/json"
    assert json.loads(response.get_body()) == counts(True, 6, 2)
    store = runtime.store
    assert await SuppressionList(store).contains(email)
    stored = await store.read("state", f"suppress|{email_hash(email)}", "entry")
    assert stored is not None and stored.body["reason"] == "erasure"
    assert await store.query("ledger", equals={"customerId": account}) == []
    assert await store.read("ledger", f"customer|128|{account}", "latest") is None
    assert await store.read("ledger", f"customer|129|{account}", "latest") is None
    assert await store.read("state", f"freqcap|{account}", "cap") is None
    assert len(await store.query("ledger", equals={"customerId": "OTHER-1"})) == 2
    assert await store.read("ledger", "customer|128|OTHER-1", "latest") is not None
    assert await store.read("state", "freqcap|OTHER-1", "cap") is not None

    again = await erase(registered_functions, {"email": email, "customerAccount": account}, admin)
    assert json.loads(again.get_body()) == counts(True, 0, 0)


async def test_more_entries_than_a_page_are_all_deleted(
    registered_functions: dict[str, Any],
    runtime: Runtime,
    monkeypatch: pytest.MonkeyPatch,
    admin: dict[str, str],
) -> None:
    monkeypatch.setattr(erasure, "PAGE_SIZE", 3)
    for index in range(4):
        await record(runtime, "C-77", f"cart-{index}", "128")  # 8 entries
    response = await erase(registered_functions, {"customerAccount": "C-77"}, admin)
    assert json.loads(response.get_body()) == counts(False, 8, 1)


async def test_an_email_alone_only_suppresses(
    registered_functions: dict[str, Any], runtime: Runtime, sandbox: Sandbox, admin: dict[str, str]
) -> None:
    email, account = seeded(sandbox)
    await record(runtime, account, "cart-A", "128")
    response = await erase(registered_functions, {"email": f"  {email.upper()} "}, admin)
    assert json.loads(response.get_body()) == counts(True, 0, 0)
    assert await SuppressionList(runtime.store).contains(email)
    assert len(await runtime.store.query("ledger", equals={"customerId": account})) == 2


@pytest.mark.parametrize(
    ("body", "paths"),
    [
        ({}, [""]),
        ({"email": None, "customerAccount": None}, [""]),
        ({"email": "not-an-address"}, ["email"]),
        ({"customerAccount": "has space"}, ["customerAccount"]),
        ({"customerAccount": "C1", "name": "Ada"}, ["name"]),
        ({"email": 5}, ["email"]),
        ([], [""]),
    ],
)
async def test_bad_input_is_a_400_problem_naming_the_field(
    registered_functions: dict[str, Any], runtime: Runtime, admin: dict[str, str], body: Any, paths: list[str]
) -> None:
    response = await erase(registered_functions, body, admin)
    assert response.status_code == 400
    assert response.mimetype == PROBLEM
    problem = json.loads(response.get_body())
    assert [error["path"] for error in problem["errors"]] == paths
    assert "not-an-address" not in response.get_body().decode()


async def test_not_json_and_too_large_are_refused(
    registered_functions: dict[str, Any], runtime: Runtime, admin: dict[str, str]
) -> None:
    wrong_type = await call(
        registered_functions,
        "privacy_erasure",
        erasure_request(raw=b"email=a@b.c", **{**admin, "Content-Type": "application/x-www-form-urlencoded"}),
    )
    assert wrong_type.status_code == 415
    too_large = await erase(
        registered_functions, {"customerAccount": "C1", "email": "a" * 5000 + "@x.org"}, admin
    )
    assert too_large.status_code == 413


async def test_a_store_failure_is_a_500_problem_without_detail(
    registered_functions: dict[str, Any],
    runtime: Runtime,
    monkeypatch: pytest.MonkeyPatch,
    admin: dict[str, str],
) -> None:
    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("secret detail a@b.example")

    monkeypatch.setattr(runtime.store, "query", broken)
    response = await erase(registered_functions, {"customerAccount": "C1"}, admin)
    assert response.status_code == 500
    assert "a@b.example" not in response.get_body().decode()


async def test_the_logs_hold_neither_the_address_nor_the_account(
    registered_functions: dict[str, Any],
    runtime: Runtime,
    sandbox: Sandbox,
    log_privacy_guard: _Capture,
    admin: dict[str, str],
) -> None:
    email, account = seeded(sandbox)
    await record(runtime, account, "cart-A", "128")
    await erase(registered_functions, {"email": email, "customerAccount": account}, admin)
    await erase(registered_functions, {"email": email, "customerAccount": account, "x": email}, admin)
    lines = "\n".join(log_privacy_guard.lines)
    assert "erasure: suppressed=True, 2 ledger entries, 1 pointers and 0 previews deleted" in lines
    assert "privacy_erasure answered 400" in lines
    for needle in (email, email_hash(email), account):
        assert needle.lower() not in lines.lower()


async def test_erasure_deletes_the_accounts_recovery_records(
    registered_functions: dict[str, Any], runtime: Runtime, sandbox: Sandbox, admin: dict[str, str]
) -> None:
    _, account = seeded(sandbox)
    records = RecoveryStore(runtime.store)
    for customer in (account, "OTHER-1"):
        cart = TrackedCart(
            cart_id=f"cart-{customer}",
            cart_version=1,
            oun="128",
            customer_id=customer,
            group="holdout",
            enrolled_at=NOW,
            enrolled_key=order_key(NOW, f"cart-{customer}", 1),
            next_check_at=NOW,
        )
        await records.enrol(cart)
        await records.record_conversion(
            Conversion(
                cart_id=cart.cart_id,
                cart_version=1,
                oun="128",
                customer_id=customer,
                group="holdout",
                enrolled_at=NOW,
                enrolled_key=cart.enrolled_key,
                order_id="SO-1",
                channel="store",
                total=Decimal("10.00"),
                ordered_at=NOW,
                hours_to_order=1.0,
                last_step_sent=0,
                match="any",
            )
        )

    response = await erase(registered_functions, {"customerAccount": account}, admin)

    assert response.status_code == 200, response.get_body()
    assert json.loads(response.get_body()) == counts(False, 0, 0, recovery=2)
    assert await runtime.store.query("state", partition=f"recovery|{account}") == []
    assert len(await runtime.store.query("state", partition="recovery|OTHER-1")) == 2
