"""The fault matrix: every upstream crossed with every fault the sandbox can
inject, each cell driven through the function registered on ``function_app.app``.

Every cell asserts its outcome from ``matrix.EXPECTED`` and, whatever the outcome, that the
stand-ins counted no duplicate (emails, triggers and webhook deliveries per dedup key; customers
per ``Idempotency-Key``) and that nothing was lost (the ledger entry ends terminal or retryable; a
detection run that failed is picked up by the next; a till's retry replays or creates once).
Cells whose outcome waits for a planned change are strict xfails naming it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import pytest

from sandbox.server import Sandbox
from shared.identity import TokenProvider
from tests.reliability.conftest import OBSERVED
from tests.reliability.harness import (
    IDENTITY_NAMED,
    Context,
    Observation,
    drive_create,
    drive_detect,
    drive_notify,
    stand_in_secrets,
)
from tests.reliability.matrix import SERVER_DELAY_SECONDS, Cell, Expect, Fault, Function, cells

CELLS = [cell for cell in cells() if cell.expect is not None]


def _param(cell: Cell) -> Any:
    assert cell.expect is not None
    marks = []
    if cell.expect.pending_item is not None:
        reason = f"item {cell.expect.pending_item} pending"
        marks.append(pytest.mark.xfail(strict=True, reason=reason))
    elif cell.expect.gap:
        reason = "a gap the matrix found, not covered by a planned change (docs/RELIABILITY.md)"
        marks.append(pytest.mark.xfail(strict=True, reason=reason))
    return pytest.param(cell, id=cell.id, marks=marks)


def test_every_row_names_every_fault_once() -> None:
    ids = [cell.id for cell in cells()]
    assert len(ids) == len(set(ids))
    assert {cell.fault for cell in cells()} == set(Fault)


@pytest.mark.parametrize("cell", [_param(cell) for cell in CELLS])
async def test_cell(
    cell: Cell,
    sandbox: Sandbox,
    registered_functions: dict[str, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    log_privacy_guard: Any,
    warm_tokens: TokenProvider,
    warm_session: aiohttp.ClientSession,
    request: pytest.FixtureRequest,
) -> None:
    assert cell.expect is not None
    ctx = Context(
        sandbox=sandbox,
        functions=registered_functions,
        directory=tmp_path,
        monkeypatch=monkeypatch,
        logs=log_privacy_guard,
        secrets=stand_in_secrets(sandbox),
        warm_tokens=warm_tokens,
        warm_session=warm_session,
    )
    for name, value in stand_in_secrets(sandbox).items():
        monkeypatch.setenv(name.upper().replace("-", "_"), value)
    sandbox.faults.clear()
    try:
        if cell.row.function is Function.NOTIFY:
            observed = await drive_notify(ctx, cell)
        elif cell.row.function is Function.DETECT:
            observed = await drive_detect(ctx, cell, CELLS.index(cell))
        else:
            observed = await drive_create(ctx, cell)
    finally:
        sandbox.faults.clear()
        await ctx.close()
    request.node.stash[OBSERVED] = observed

    assert_outcome(cell.expect, observed)
    assert_identity_named(cell, observed)
    assert_nothing_twice_nothing_lost(cell, observed)
    assert_server_delay_honoured(cell, observed)


def assert_outcome(expect: Expect, observed: Observation) -> None:
    assert observed.fault_hits > 0, "the fault never reached the code path this cell is about"
    assert observed.outcome == expect.outcome, f"expected {expect.label}, observed {observed.label}"
    if expect.outcome == "http":
        assert observed.detail is not None
        wanted = {expect.detail} if expect.detail else {"502", "503", "504"}
        assert observed.detail in wanted, f"expected {expect.label}, observed {observed.label}"
        assert "not problem+json with the correlation id" not in observed.notes
    elif expect.detail is not None:
        assert observed.detail == expect.detail, f"expected {expect.label}, observed {observed.label}"


def assert_identity_named(cell: Cell, observed: Observation) -> None:
    """A failing managed-identity endpoint fails with an error that names the identity (no client
    secret exists in those cells, so a secret read would have failed them differently)."""
    if cell.row.id == "managed-identity" and observed.outcome == "poisoned":
        assert IDENTITY_NAMED in observed.notes, "the error does not name the managed identity"


def assert_nothing_twice_nothing_lost(cell: Cell, observed: Observation) -> None:
    assert observed.delivered <= 1, f"{observed.delivered} deliveries for one key: a duplicate"
    function = cell.row.function
    if function is Function.DETECT:
        # Queued exactly once over the run with the fault and the run after it.
        assert observed.delivered == 1, f"the cart was queued {observed.delivered} times"
        return
    if function is Function.CREATE:
        retry = observed.ledger or ""
        if observed.outcome == "sent":
            assert observed.delivered == 1 and "201 (replayed)" in retry, retry
        elif "(replayed)" in retry:
            # Kept for the key because F&O may have created it: the retry gets the same answer.
            assert retry.startswith(f"retry: {observed.detail}"), retry
        else:
            # Released: nothing was created, so the till's retry creates, once.
            assert retry == "retry: 201" and observed.delivered == 1, retry
        return
    ledger = observed.ledger or "missing"
    if observed.outcome in ("sent", "degraded"):
        assert observed.delivered == 1 and ledger == "sent", ledger
    elif observed.outcome == "poisoned":
        # Retryable: an operator re-queues the poison message; detection re-queues a pending or
        # stale claimed entry by itself.
        assert ledger.split("(")[0] in ("failed", "pending", "claimed"), ledger
    elif observed.outcome == "uncertain":
        # Terminal, or "sending" until detection settles it uncertain: never sent again either way.
        assert ledger.split("(")[0] in ("uncertain", "sending"), ledger
    elif observed.outcome in ("skipped", "failed"):
        assert ledger.split("(")[0] == observed.outcome, ledger
        assert observed.delivered == 0


def assert_server_delay_honoured(cell: Cell, observed: Observation) -> None:
    """A retry after a 429 that named a delay waited for it, not for the backoff (at most 0.01 s in
    these settings). The waits are recorded, not slept; an X-RateLimit-Reset epoch is read some
    time after the fault was installed, so it asks for less than it did then."""
    if cell.fault not in (Fault.RETRY_AFTER, Fault.RATELIMIT_RESET) or not observed.waits:
        return
    if cell.fault is Fault.RETRY_AFTER:
        assert min(observed.waits) >= SERVER_DELAY_SECONDS, observed.waits
    else:
        assert min(observed.waits) >= 1, observed.waits
