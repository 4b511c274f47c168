"""The holdout: a stable keyed assignment, decided in notify after every check, never mailed."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from sandbox.server import Sandbox
from shared.abandoned_carts.messages import CartMessage
from shared.recovery.holdout import WeakSaltError, is_held_out, period_of
from shared.runtime import Runtime
from shared.state.ledger import Ledger, LedgerStatus
from tests.notify.conftest import NOW, RecordingProvider, run_notify
from tests.recovery.conftest import SALT, Clock, bulk_carts, notify_all, tracked


def test_assignment_is_stable_and_close_to_the_percentage_over_10000_customers() -> None:
    accounts = [f"{100000 + i:06d}" for i in range(10_000)]
    salt = SALT.encode()
    held = {a for a in accounts if is_held_out(salt, a, NOW, percent=10, period_days=30)}
    # Binomial(10000, 0.1): one standard deviation is 30 customers; 100 is more than three.
    assert 900 <= len(held) <= 1100
    # The first and the last hour of NOW's period (periods count whole days from 1970-01-01).
    start = (NOW - timedelta(days=(NOW.date().toordinal() - 719163) % 30)).replace(hour=0, minute=0, second=0)
    same_period = [start, start + timedelta(days=29, hours=23)]
    assert {period_of(t, 30) for t in same_period} == {period_of(NOW, 30)}
    for moment in same_period:
        assert {a for a in accounts if is_held_out(salt, a, moment, percent=10, period_days=30)} == held
    next_period = {
        a for a in accounts if is_held_out(salt, a, NOW + timedelta(days=30), percent=10, period_days=30)
    }
    other_salt = {
        a
        for a in accounts
        if is_held_out(b"another-salt-of-32-bytes-long!!!", a, NOW, percent=10, period_days=30)
    }
    # A new period or another salt draws afresh: about a tenth of the held-out stay held out.
    assert len(next_period & held) < 200 and len(other_salt & held) < 200
    assert not any(is_held_out(salt, a, NOW, percent=0, period_days=30) for a in accounts[:100])
    with pytest.raises(WeakSaltError):
        is_held_out(b"short", "004001", NOW, percent=10, period_days=30)


@pytest.fixture
def notify_overrides() -> dict[str, Any]:
    return {"holdout_percent": 50, "reminder_steps": "60,1440"}


async def test_held_out_carts_are_never_mailed_and_never_counted_as_sent(
    registered_functions: dict[str, Any],
    runtime: Runtime,
    recorder: RecordingProvider,
    sandbox: Sandbox,
    clock: Clock,
) -> None:
    carts = bulk_carts(sandbox, 40)
    await notify_all(registered_functions, runtime, carts)
    records = {t.cart_id: t for t in await tracked(runtime)}
    assert set(records) == {c.id for c in carts}
    held = {cid for cid, t in records.items() if t.group == "holdout"}
    mailed = {cid for cid, t in records.items() if t.group == "mailed"}
    assert 8 <= len(held) <= 32 and held | mailed == set(records)
    assert {m.data["cartId"] for m in recorder.sent} == mailed
    ledger = Ledger(runtime.store)
    for cart in carts:
        found = await ledger.get(cart.id, cart.version, 1)
        assert found is not None
        entry = found[0]
        assert entry.status is (LedgerStatus.HELD_OUT if cart.id in held else LedgerStatus.SENT)
        # A held-out cart has no second reminder; a mailed one does.
        assert (await ledger.get(cart.id, cart.version, 2) is None) == (cart.id in held)
    for record in records.values():
        assert record.product_ids and record.currency == "USD" and record.enrolled_at == NOW
    # A redelivered message of a held-out cart changes nothing and sends nothing.
    first_held = next(c for c in carts if c.id in held)
    before = len(recorder.sent)
    body = CartMessage(cart_id=first_held.id, cart_version=first_held.version, oun="128", step=1).encode()
    await run_notify(registered_functions, body)
    assert len(recorder.sent) == before
    assert (await tracked(runtime))[0].group in {"mailed", "holdout"}


class TestDryRun:
    @pytest.fixture
    def notify_overrides(self) -> dict[str, Any]:
        return {"holdout_percent": 50, "dry_run": True}

    async def test_a_dry_run_holds_nobody_out_and_tracks_nothing(
        self, registered_functions: dict[str, Any], runtime: Runtime, sandbox: Sandbox, clock: Clock
    ) -> None:
        carts = bulk_carts(sandbox, 12)
        await notify_all(registered_functions, runtime, carts)
        ledger = Ledger(runtime.store)
        statuses = {(await ledger.get(c.id, c.version, 1) or (None,))[0].status for c in carts}  # type: ignore[union-attr]
        assert statuses == {LedgerStatus.PREVIEWED}
        assert await tracked(runtime) == []
