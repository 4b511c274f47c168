"""One contract suite for every DocumentStore backend: SQLite, Cosmos (in-process fake of the
container API) and, when COSMOS_TEST_ENDPOINT is set, a real Cosmos DB account or emulator."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from shared.state.cosmos import CosmosStore, build_query, item_id
from shared.state.counting import CountingStore
from shared.state.ledger import Ledger, LedgerEntry, LedgerStatus, TransitionError, pointer_partition
from shared.state.records import Watermark, WatermarkConflictError, WatermarkStore
from shared.state.sqlite import SqliteStore
from shared.state.store import (
    MAX_BATCH_OPERATIONS,
    ConflictError,
    ContainerName,
    Document,
    DocumentStore,
    NotAppliedError,
    NotFoundError,
    PreconditionFailedError,
    StoreError,
    WriteOp,
)
from tests.fakes.cosmos import FakeContainer

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["sqlite", "cosmos-fake", "cosmos-live"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[DocumentStore]:
    if request.param == "sqlite":
        backend: DocumentStore = SqliteStore(tmp_path / "s.sqlite3")
    elif request.param == "cosmos-fake":
        backend = CosmosStore({"ledger": FakeContainer(), "state": FakeContainer()})
    else:
        endpoint = os.environ.get("COSMOS_TEST_ENDPOINT")
        if not endpoint:
            pytest.skip(
                "COSMOS_TEST_ENDPOINT is not set: no real Cosmos DB account or emulator to test against"
            )
        backend = CosmosStore.connect(
            endpoint,
            os.environ.get("COSMOS_TEST_DATABASE", "commerce-connector"),
            {"ledger": "ledger", "state": "state"},
        )
    yield backend
    await backend.close()


def unique(prefix: str) -> str:
    # Unique partitions keep the live suite independent of what earlier runs left behind.
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def test_create_read_and_conflict(store: DocumentStore) -> None:
    p = unique("p")
    created = await store.create("state", p, "k1", {"a": 1})
    assert created.etag
    read = await store.read("state", p, "k1")
    assert read is not None and read.body == {"a": 1} and read.etag == created.etag
    with pytest.raises(ConflictError):
        await store.create("state", p, "k1", {"a": 2})
    assert await store.read("state", p, "missing") is None
    assert await store.read("ledger", p, "k1") is None, "containers are separate"


async def test_replace_is_conditional_on_etag(store: DocumentStore) -> None:
    p = unique("p")
    first = await store.create("state", p, "k", {"n": 1})
    second = await store.replace("state", p, "k", {"n": 2}, etag=first.etag)
    assert second.etag != first.etag
    with pytest.raises(PreconditionFailedError):
        await store.replace("state", p, "k", {"n": 3}, etag=first.etag)
    with pytest.raises(NotFoundError):
        await store.replace("state", p, "nope", {"n": 3}, etag=first.etag)
    current = await store.read("state", p, "k")
    assert current is not None and current.body == {"n": 2}


async def test_upsert_and_delete(store: DocumentStore) -> None:
    p = unique("p")
    await store.upsert("state", p, "k", {"v": "a"})
    await store.upsert("state", p, "k", {"v": "b"})
    doc = await store.read("state", p, "k")
    assert doc is not None and doc.body == {"v": "b"}
    with pytest.raises(PreconditionFailedError):
        await store.delete("state", p, "k", etag="stale")
    await store.delete("state", p, "k", etag=doc.etag)
    assert await store.read("state", p, "k") is None
    with pytest.raises(NotFoundError):
        await store.delete("state", p, "k")


async def test_keys_with_characters_cosmos_forbids(store: DocumentStore) -> None:
    p = unique("p")
    await store.create("state", p, "a/b?c#d\\e", {"x": 1})
    doc = await store.read("state", p, "a/b?c#d\\e")
    assert doc is not None and doc.body == {"x": 1}


async def test_query_filters_orders_and_limits(store: DocumentStore) -> None:
    p = unique("q")
    for i, status in enumerate(["pending", "sent", "pending", "pending"]):
        await store.create(
            "ledger", p, f"k{i}", {"status": status, "dueAt": f"2026-11-2{i}T00:00:00.000000Z"}
        )
    docs = await store.query(
        "ledger",
        partition=p,
        equals={"status": "pending"},
        at_most={"dueAt": "2026-11-22T00:00:00.000000Z"},
        order_by="dueAt",
        descending=True,
        limit=10,
    )
    assert [d.key for d in docs] == ["k2", "k0"]
    limited = await store.query("ledger", partition=p, order_by="dueAt", limit=2)
    assert [d.key for d in limited] == ["k0", "k1"]


async def test_cross_partition_query(store: DocumentStore) -> None:
    marker = unique("m")
    await store.create("ledger", unique("a"), "k", {"marker": marker})
    await store.create("ledger", unique("b"), "k", {"marker": marker})
    docs = await store.query("ledger", equals={"marker": marker}, limit=10)
    assert len(docs) == 2


async def test_concurrent_creates_have_one_winner(store: DocumentStore) -> None:
    p = unique("race")
    results = await asyncio.gather(
        *(store.create("state", p, "only", {"n": n}) for n in range(10)), return_exceptions=True
    )
    assert sum(1 for r in results if not isinstance(r, Exception)) == 1
    assert all(isinstance(r, ConflictError) for r in results if isinstance(r, Exception))


async def test_ttl_expiry_sqlite_and_fake(tmp_path: Path) -> None:
    clock = Clock()
    backends: list[DocumentStore] = [
        SqliteStore(tmp_path / "ttl.sqlite3", clock=clock),
        CosmosStore({"ledger": FakeContainer(clock=clock), "state": FakeContainer(clock=clock)}),
    ]
    for backend in backends:
        await backend.create("state", "p", "k", {"a": 1}, ttl_seconds=60)
        assert await backend.read("state", "p", "k") is not None
        clock.now += 61
        assert await backend.read("state", "p", "k") is None
        # An expired document no longer blocks a create of the same key.
        await backend.create("state", "p", "k", {"a": 2}, ttl_seconds=60)
        clock.now -= 61
        await backend.close()


async def test_read_many_answers_what_exists(store: DocumentStore) -> None:
    a, b = unique("a"), unique("b")
    await store.create("ledger", a, "k1", {"n": 1})
    await store.create("ledger", a, "x/y?z", {"n": 2})
    await store.create("ledger", b, "k1", {"n": 3})
    await store.create("state", b, "k2", {"n": 4})
    found = await store.read_many(
        "ledger", [(a, "k1"), (a, "x/y?z"), (b, "k1"), (b, "k2"), (unique("c"), "k1"), (a, "k1")]
    )
    assert {ref: doc.body for ref, doc in found.items()} == {
        (a, "k1"): {"n": 1},
        (a, "x/y?z"): {"n": 2},
        (b, "k1"): {"n": 3},
    }, "missing documents and other containers are left out, a repeated ref answered once"
    single = await store.read("ledger", a, "k1")
    assert single is not None and found[(a, "k1")].etag == single.etag
    assert await store.read_many("ledger", []) == {}


async def test_write_many_writes_every_partition_and_answers_per_operation(store: DocumentStore) -> None:
    a, b = unique("a"), unique("b")
    old = await store.create("state", a, "old", {"v": 0})
    results = await store.write_many(
        "state",
        [
            WriteOp("create", a, "k1", {"v": 1}),
            WriteOp("replace", a, "old", {"v": 2}, etag=old.etag),
            WriteOp("upsert", b, "k1", {"v": 3}),
            WriteOp("create", b, "k2", {"v": 4}),
        ],
    )
    assert all(isinstance(r, Document) for r in results)
    documents = [r for r in results if isinstance(r, Document)]
    assert [(d.partition, d.key, d.body) for d in documents] == [
        (a, "k1", {"v": 1}),
        (a, "old", {"v": 2}),
        (b, "k1", {"v": 3}),
        (b, "k2", {"v": 4}),
    ]
    for document in documents:
        read = await store.read("state", document.partition, document.key)
        assert read is not None and read.body == document.body and read.etag == document.etag
    # The etags answered are the documents' own: a conditional write on them succeeds.
    await store.replace("state", a, "old", {"v": 5}, etag=documents[1].etag)


async def test_write_many_is_atomic_per_partition_and_names_the_failed_operation(
    store: DocumentStore,
) -> None:
    a, b, c, d = unique("a"), unique("b"), unique("c"), unique("d")
    taken = await store.create("ledger", a, "taken", {"v": 0})
    await store.create("ledger", b, "current", {"v": 0})
    stale = (await store.create("ledger", c, "doc", {"v": 0})).etag
    await store.replace("ledger", c, "doc", {"v": 1}, etag=stale)
    results = await store.write_many(
        "ledger",
        [
            WriteOp("create", a, "new", {"v": 1}),
            WriteOp("create", a, "taken", {"v": 1}),  # conflicts: undoes "new" of its partition
            WriteOp("create", b, "fresh", {"v": 1}),  # another partition: written
            WriteOp("replace", c, "doc", {"v": 2}, etag=stale),
            WriteOp("upsert", c, "other", {"v": 2}),  # rolled back with the stale replace
            WriteOp("replace", d, "missing", {"v": 1}, etag=taken.etag),
        ],
    )
    kinds = [type(r) for r in results]
    assert kinds == [
        NotAppliedError,
        ConflictError,
        Document,
        PreconditionFailedError,
        NotAppliedError,
        NotFoundError,
    ]
    assert await store.read("ledger", a, "new") is None
    kept = await store.read("ledger", a, "taken")
    assert kept is not None and kept.body == {"v": 0}
    assert await store.read("ledger", b, "fresh") is not None
    unchanged = await store.read("ledger", c, "doc")
    assert unchanged is not None and unchanged.body == {"v": 1}
    assert await store.read("ledger", c, "other") is None


async def test_concurrent_batches_have_one_winner_per_create(store: DocumentStore) -> None:
    p = unique("race")
    results = await asyncio.gather(
        *(store.write_many("state", [WriteOp("create", p, "only", {"n": n})]) for n in range(6))
    )
    winners = [r[0] for r in results if isinstance(r[0], Document)]
    assert len(winners) == 1
    assert all(isinstance(r[0], ConflictError) for r in results if r[0] is not winners[0])


async def test_write_many_limits_operations_per_partition(store: DocumentStore) -> None:
    p = unique("big")
    with pytest.raises(ValueError, match="at most 100"):
        await store.write_many(
            "state", [WriteOp("upsert", p, f"k{i}", {"i": i}) for i in range(MAX_BATCH_OPERATIONS + 1)]
        )
    assert await store.read("state", p, "k0") is None, "a refused call writes nothing"
    full = await store.write_many(
        "state", [WriteOp("create", p, f"k{i}", {"i": i}) for i in range(MAX_BATCH_OPERATIONS)]
    )
    assert all(isinstance(r, Document) for r in full)
    spread = await store.write_many(
        "state", [WriteOp("create", unique("s"), "k", {"i": i}) for i in range(MAX_BATCH_OPERATIONS + 20)]
    )
    assert all(isinstance(r, Document) for r in spread), "the limit is per partition, not per call"


def test_write_op_conditions_are_checked() -> None:
    with pytest.raises(ValueError, match="etag"):
        WriteOp("replace", "p", "k", {})
    with pytest.raises(ValueError, match="etag"):
        WriteOp("create", "p", "k", {}, etag="x")


async def test_write_many_ttl_sqlite_and_fake(tmp_path: Path) -> None:
    clock = Clock()
    backends: list[DocumentStore] = [
        SqliteStore(tmp_path / "ttl-many.sqlite3", clock=clock),
        CosmosStore({"ledger": FakeContainer(clock=clock), "state": FakeContainer(clock=clock)}),
    ]
    for backend in backends:
        await backend.write_many(
            "state", [WriteOp("create", "p", "k", {"a": 1}, ttl_seconds=60), WriteOp("create", "p", "j", {})]
        )
        clock.now += 61
        assert set(await backend.read_many("state", [("p", "k"), ("p", "j")])) == {("p", "j")}
        # An expired document no longer blocks a batched create of the same key.
        again = await backend.write_many("state", [WriteOp("create", "p", "k", {"a": 2})])
        assert isinstance(again[0], Document)
        clock.now -= 61
        await backend.close()


async def test_cosmos_bulk_calls_are_one_request_each() -> None:
    """A read-many is one request; a partition's operations are one transactional batch; a lone
    operation of a partition is a point write."""
    ledger = FakeContainer()
    store = CosmosStore({"ledger": ledger, "state": FakeContainer()})
    await store.read_many("ledger", [("a", "k1"), ("b", "k2"), ("c", "k3")])
    assert ledger.calls == ["read_items"]
    ledger.calls.clear()
    await store.write_many(
        "ledger",
        [WriteOp("create", "a", "k1", {}), WriteOp("create", "a", "k2", {}), WriteOp("upsert", "b", "k", {})],
    )
    assert sorted(ledger.calls) == ["execute_item_batch", "upsert_item"]


def entry(
    cart_id: str, version: int = 1, step: int = 1, modified: datetime = NOW, customer: str = "C1"
) -> LedgerEntry:
    return LedgerEntry(
        cart_id=cart_id,
        cart_version=version,
        step=step,
        oun="128",
        customer_id=customer,
        modified_at=modified,
        due_at=NOW,
        updated_at=NOW,
    )


async def test_ledger_records_once_and_transitions_conditionally(store: DocumentStore) -> None:
    ledger = Ledger(store)
    cart = unique("cart")
    assert await ledger.record(entry(cart)) is True
    assert await ledger.record(entry(cart)) is False
    claimed = await ledger.transition(
        cart, 1, 1, allowed_from=frozenset({LedgerStatus.PENDING}), to=LedgerStatus.CLAIMED, now=NOW
    )
    assert claimed.status is LedgerStatus.CLAIMED and claimed.attempts == 1
    with pytest.raises(TransitionError):
        await ledger.transition(
            cart, 1, 1, allowed_from=frozenset({LedgerStatus.PENDING}), to=LedgerStatus.CLAIMED, now=NOW
        )
    sent = await ledger.transition(
        cart,
        1,
        1,
        allowed_from=frozenset({LedgerStatus.CLAIMED}),
        to=LedgerStatus.SENT,
        now=NOW,
        provider_ids={"trigger": "t-1"},
    )
    assert sent.provider_ids == {"trigger": "t-1"}


async def test_concurrent_claims_have_one_winner(store: DocumentStore) -> None:
    ledger = Ledger(store)
    cart = unique("cart")
    await ledger.record(entry(cart))

    async def claim() -> bool:
        try:
            await ledger.transition(
                cart, 1, 1, allowed_from=frozenset({LedgerStatus.PENDING}), to=LedgerStatus.CLAIMED, now=NOW
            )
        except TransitionError:
            return False
        return True

    outcomes = await asyncio.gather(*(claim() for _ in range(8)))
    assert outcomes.count(True) == 1


async def test_latest_cart_pointer_supersedes_older_cart(store: DocumentStore) -> None:
    ledger = Ledger(store)
    customer = unique("cust")
    old, new = unique("old"), unique("new")
    await ledger.record(entry(old, modified=NOW - timedelta(hours=2)))
    assert await ledger.register_latest_cart("128", customer, old, 1, NOW - timedelta(hours=2), now=NOW)
    await ledger.record(entry(new, modified=NOW - timedelta(hours=1)))
    assert await ledger.register_latest_cart("128", customer, new, 1, NOW - timedelta(hours=1), now=NOW)
    old_entry = await ledger.get(old, 1, 1)
    assert old_entry is not None and old_entry[0].status is LedgerStatus.SUPERSEDED
    # An older cart seen later (another channel page, a late run) is the one superseded.
    older = unique("older")
    await ledger.record(entry(older, modified=NOW - timedelta(hours=3)))
    assert not await ledger.register_latest_cart("128", customer, older, 1, NOW - timedelta(hours=3), now=NOW)
    older_entry = await ledger.get(older, 1, 1)
    assert older_entry is not None and older_entry[0].status is LedgerStatus.SUPERSEDED
    assert await ledger.latest_cart("128", customer) == new


async def test_changed_cart_supersedes_its_previous_version(store: DocumentStore) -> None:
    ledger = Ledger(store)
    cart, customer = unique("cart"), unique("cust")
    await ledger.record(entry(cart, version=1, modified=NOW - timedelta(hours=2)))
    await ledger.register_latest_cart("128", customer, cart, 1, NOW - timedelta(hours=2), now=NOW)
    await ledger.record(entry(cart, version=2, modified=NOW - timedelta(hours=1)))
    assert await ledger.register_latest_cart("128", customer, cart, 2, NOW - timedelta(hours=1), now=NOW)
    v1 = await ledger.get(cart, 1, 1)
    v2 = await ledger.get(cart, 2, 1)
    assert v1 is not None and v1[0].status is LedgerStatus.SUPERSEDED and v1[0].reason == "cart_changed"
    assert v2 is not None and v2[0].status is LedgerStatus.PENDING


async def test_record_latest_decides_a_page_as_one_cart_at_a_time_would(store: DocumentStore) -> None:
    ledger = Ledger(store)
    hour = timedelta(hours=1)
    fresh, newer, older, known, changed = (unique(c) for c in ("fresh", "newer", "older", "known", "changed"))
    old_cart, newest_cart = unique("oldcart"), unique("newest")
    # newer's customer points at an older cart with a pending entry; older's at a newer cart;
    # known is recorded already; changed is pointed at in its version 1.
    await ledger.record(entry(old_cart, modified=NOW - 3 * hour, customer=newer))
    await ledger.register_latest_cart("128", newer, old_cart, 1, NOW - 3 * hour, now=NOW)
    await ledger.register_latest_cart("128", older, newest_cart, 1, NOW - hour, now=NOW)
    await ledger.record(entry(known, customer=known))
    await ledger.record(entry(changed, version=1, modified=NOW - 3 * hour, customer=changed))
    await ledger.register_latest_cart("128", changed, changed, 1, NOW - 3 * hour, now=NOW)
    page = [
        entry(fresh, customer=fresh),
        entry(newer, modified=NOW - 2 * hour, customer=newer),
        entry(older, modified=NOW - 2 * hour, customer=older),
        entry(known, customer=known),
        entry(changed, version=2, modified=NOW - 2 * hour, customer=changed),
    ]
    counting = CountingStore(store)
    recorded = await Ledger(counting).record_latest(page, now=NOW)
    assert recorded.outcomes == ["latest", "latest", "superseded", "already_recorded", "latest"]
    assert dict(counting.calls) == {"read_many": 1, "write_many": 1}
    assert {(t.cart_id, t.reason, t.keep_version) for t in recorded.supersede} == {
        (old_cart, "newer_cart_of_customer", None),
        (changed, "cart_changed", 2),
    }
    before = counting.round_trips
    assert await Ledger(counting).supersede(recorded.supersede, now=NOW) == 2
    assert counting.round_trips - before == 2, "one round of queries, one write"

    async def status(cart_id: str, version: int = 1) -> tuple[LedgerStatus, str | None]:
        found = await ledger.get(cart_id, version, 1)
        assert found is not None
        return found[0].status, found[0].reason

    assert await status(fresh) == (LedgerStatus.PENDING, None)
    assert await status(newer) == (LedgerStatus.PENDING, None)
    assert await status(old_cart) == (LedgerStatus.SUPERSEDED, "newer_cart_of_customer")
    assert await status(older) == (LedgerStatus.SUPERSEDED, "newer_cart_of_customer")
    assert await status(changed, 1) == (LedgerStatus.SUPERSEDED, "cart_changed")
    assert await status(changed, 2) == (LedgerStatus.PENDING, None)
    for customer, cart in [(fresh, fresh), (newer, newer), (older, newest_cart), (changed, changed)]:
        assert await ledger.latest_cart("128", customer) == cart
    with pytest.raises(ValueError, match="one entry per customer"):
        await ledger.record_latest([entry(unique("a")), entry(unique("b"))], now=NOW)


class MovesPointerBeforeWrite:
    """The store, except that another run records a newer cart of the customer between this
    caller's bulk read and its bulk write."""

    def __init__(self, inner: DocumentStore, customer: str, newer_cart: str) -> None:
        self._inner = inner
        self._customer = customer
        self._newer_cart = newer_cart

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)

    async def write_many(
        self, container: ContainerName, ops: Sequence[WriteOp]
    ) -> list[Document | StoreError]:
        other = Ledger(self._inner)
        await other.record(entry(self._newer_cart, customer=self._customer))
        await other.register_latest_cart("128", self._customer, self._newer_cart, 1, NOW, now=NOW)
        return await self._inner.write_many(container, ops)


async def test_record_latest_settles_a_pointer_moved_meanwhile(store: DocumentStore) -> None:
    customer, mine, theirs = unique("cust"), unique("mine"), unique("theirs")
    racing = MovesPointerBeforeWrite(store, customer, theirs)
    recorded = await Ledger(racing).record_latest(  # type: ignore[arg-type]
        [entry(mine, modified=NOW - timedelta(hours=1), customer=customer)], now=NOW
    )
    assert recorded.outcomes == ["superseded"]
    ledger = Ledger(store)
    assert await ledger.latest_cart("128", customer) == theirs
    found = await ledger.get(mine, 1, 1)
    assert found is not None and found[0].status is LedgerStatus.SUPERSEDED
    pointer = await store.read("ledger", pointer_partition("128", customer), "latest")
    assert pointer is not None and pointer.body["cartId"] == theirs


async def test_due_pending_uses_sortable_times(store: DocumentStore) -> None:
    ledger = Ledger(store)
    cart = unique("due")
    due_now = entry(cart, step=1).model_copy(update={"due_at": NOW - timedelta(microseconds=500)})
    later = entry(cart, step=2).model_copy(update={"due_at": NOW + timedelta(seconds=1)})
    await ledger.record(due_now)
    await ledger.record(later)
    found = [e for e in await ledger.due_pending(now=NOW, limit=1000) if e.cart_id == cart]
    assert [e.step for e in found] == [1]


async def test_watermark_conditional_save(store: DocumentStore) -> None:
    watermarks = WatermarkStore(store)
    oun = unique("oun")
    assert await watermarks.load(oun) == (None, None)
    mark = Watermark(modified_at=NOW, ids_at_modified=["a", "b"], updated_at=NOW)
    etag = await watermarks.save(oun, mark, None)
    with pytest.raises(WatermarkConflictError):
        await watermarks.save(oun, mark, None)
    loaded, loaded_etag = await watermarks.load(oun)
    assert loaded == mark and loaded_etag == etag
    newer = await watermarks.save(oun, mark.model_copy(update={"ids_at_modified": ["c"]}), etag)
    with pytest.raises(WatermarkConflictError):
        await watermarks.save(oun, mark, etag)
    assert newer != etag


def test_cosmos_query_is_parameterised() -> None:
    query, parameters = build_query(
        equals={"status": "pending'; DROP"},
        at_most={"dueAt": "x"},
        order_by="dueAt",
        descending=False,
        limit=5,
    )
    assert (
        query
        == "SELECT * FROM c WHERE c.status = @p0 AND c.dueAt <= @p1 ORDER BY c.dueAt ASC OFFSET 0 LIMIT 5"
    )
    assert parameters[0]["value"] == "pending'; DROP"
    with pytest.raises(ValueError, match="field name"):
        build_query(equals={"a b": 1}, at_most={}, order_by=None, descending=False, limit=1)


def test_cosmos_item_ids_avoid_forbidden_characters() -> None:
    assert item_id("a/b\\c?d#e") == "a%2Fb%5Cc%3Fd%23e"
