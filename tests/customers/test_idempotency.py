"""Idempotency records on the real SQLite store: claim, replay, reuse, in flight, takeover, expiry."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from shared.customers.idempotency import (
    Claim,
    IdempotencyRecords,
    InFlight,
    InvalidIdempotencyKeyError,
    KeyReused,
    Replay,
    StoredResponse,
    body_hash,
    check_key,
    partition_for,
)
from shared.state.sqlite import SqliteStore


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def records(tmp_path: Path, clock: Clock) -> AsyncIterator[IdempotencyRecords]:
    store = SqliteStore(tmp_path / "state.sqlite3", clock=clock)
    try:
        yield IdempotencyRecords(store, ttl_seconds=3600, lease_seconds=60, clock=clock)
    finally:
        await store.close()


CREATED = StoredResponse(201, {"customerAccount": "100001"}, {"Location": "x"})


async def test_first_request_claims_and_a_repeat_replays(records: IdempotencyRecords) -> None:
    claim = await records.begin("key-1", "hash-a")
    assert isinstance(claim, Claim)
    await records.complete(claim, CREATED)
    assert await records.begin("key-1", "hash-a") == Replay(CREATED)


async def test_other_body_with_the_same_key_is_reuse(records: IdempotencyRecords) -> None:
    claim = await records.begin("key-1", "hash-a")
    assert isinstance(claim, Claim)
    assert isinstance(await records.begin("key-1", "hash-b"), KeyReused)
    await records.complete(claim, CREATED)
    assert isinstance(await records.begin("key-1", "hash-b"), KeyReused)


async def test_repeat_while_in_flight(records: IdempotencyRecords) -> None:
    assert isinstance(await records.begin("key-1", "hash-a"), Claim)
    assert isinstance(await records.begin("key-1", "hash-a"), InFlight)


async def test_released_key_can_be_claimed_again(records: IdempotencyRecords) -> None:
    claim = await records.begin("key-1", "hash-a")
    assert isinstance(claim, Claim)
    await records.release(claim)
    assert isinstance(await records.begin("key-1", "hash-a"), Claim)


async def test_abandoned_claim_is_taken_over_after_the_lease(
    records: IdempotencyRecords, clock: Clock
) -> None:
    first = await records.begin("key-1", "hash-a")
    assert isinstance(first, Claim)
    clock.now += 61
    second = await records.begin("key-1", "hash-a")
    assert isinstance(second, Claim)
    # The first worker's late completion loses: its etag is stale.
    await records.complete(first, StoredResponse(504, {}))
    await records.complete(second, CREATED)
    assert await records.begin("key-1", "hash-a") == Replay(CREATED)


async def test_records_expire(records: IdempotencyRecords, clock: Clock) -> None:
    claim = await records.begin("key-1", "hash-a")
    assert isinstance(claim, Claim)
    await records.complete(claim, CREATED)
    clock.now += 3601
    assert isinstance(await records.begin("key-1", "hash-b"), Claim)


async def test_concurrent_claims_give_exactly_one_owner(records: IdempotencyRecords) -> None:
    results = await asyncio.gather(*(records.begin("key-1", "hash-a") for _ in range(10)))
    assert sum(isinstance(r, Claim) for r in results) == 1
    assert sum(isinstance(r, InFlight) for r in results) == 9


def test_body_hash_ignores_key_order_only() -> None:
    assert body_hash({"a": 1, "b": [1, 2]}) == body_hash({"b": [1, 2], "a": 1})
    assert body_hash({"a": 1}) != body_hash({"a": 2})


def test_partition_hides_the_key() -> None:
    assert partition_for("till-7/abc").startswith("idem|")
    assert "till" not in partition_for("till-7/abc")


@pytest.mark.parametrize("value", ["", "   ", "x" * 256, "caf\u00e9", "a\nb"])
def test_invalid_keys(value: str) -> None:
    with pytest.raises(InvalidIdempotencyKeyError):
        check_key(value)


def test_valid_key_is_trimmed() -> None:
    assert check_key(" 3f2a-till-7 ") == "3f2a-till-7"
