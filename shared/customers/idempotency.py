"""``Idempotency-Key`` records in the state store, so a till that retries never creates twice.

One document per key in the ``state`` container, partition ``idem|<sha256 of the key>`` (the key
itself may be anything the POS sends; its hash keeps it out of partition names). The first request
*claims* the key with a conditional ``create`` holding the body's hash; it later *completes* the
record with the response (``replace`` on the claim's etag) or *releases* it (when F&O certainly did
not create anything, so a retry may run again). A second request with the same key then gets:

- the stored response, when the first one completed and the body hash matches;
- :class:`KeyReused` when the body differs (answer 422);
- :class:`InFlight` while the first one is still running (answer 409).

A claim older than ``lease_seconds`` is taken over: its worker died before it could complete or
release. Records expire ``ttl_seconds`` after they were last written.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from shared.state.store import (
    ConflictError,
    ContainerName,
    Document,
    DocumentStore,
    NotFoundError,
    PreconditionFailedError,
)

CONTAINER: ContainerName = "state"
RECORD_KEY = "record"
MAX_KEY_LENGTH = 255
_ATTEMPTS = 5


class InvalidIdempotencyKeyError(ValueError):
    """The header is empty, too long or not printable ASCII."""


def check_key(value: str) -> str:
    key = value.strip()
    if not key or len(key) > MAX_KEY_LENGTH or not all(" " <= ch <= "~" for ch in key):
        raise InvalidIdempotencyKeyError(
            f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} printable ASCII characters"
        )
    return key


def body_hash(body: Any) -> str:
    """SHA-256 of the canonical JSON of a (validated) request body."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def partition_for(key: str) -> str:
    return "idem|" + hashlib.sha256(key.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class StoredResponse:
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"status": self.status, "body": self.body, "headers": self.headers}

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> StoredResponse:
        return cls(int(value["status"]), dict(value["body"]), dict(value.get("headers") or {}))


@dataclass(frozen=True)
class Claim:
    """This request owns the key: run it, then ``complete`` or ``release``."""

    partition: str
    etag: str
    body_hash: str


@dataclass(frozen=True)
class Replay:
    response: StoredResponse


@dataclass(frozen=True)
class InFlight:
    pass


@dataclass(frozen=True)
class KeyReused:
    pass


Begin = Claim | Replay | InFlight | KeyReused


class IdempotencyRecords:
    def __init__(
        self,
        store: DocumentStore,
        *,
        ttl_seconds: int,
        lease_seconds: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._ttl = ttl_seconds
        self._lease = lease_seconds
        self._clock = clock

    async def begin(self, key: str, digest: str) -> Begin:
        partition = partition_for(key)
        claim_body = {
            "kind": "idempotency",
            "state": "in_flight",
            "bodyHash": digest,
            "startedAt": self._clock(),
        }
        # Bounded: each round either decides or lost a race that moved the record on.
        for _ in range(_ATTEMPTS):
            try:
                created = await self._store.create(
                    CONTAINER, partition, RECORD_KEY, claim_body, ttl_seconds=self._ttl
                )
                return Claim(partition, created.etag, digest)
            except ConflictError:
                pass
            existing = await self._store.read(CONTAINER, partition, RECORD_KEY)
            if existing is None:
                continue  # released or expired in between: try to claim again
            decided = self._decide(existing, digest)
            if decided is not None:
                return decided
            try:
                taken = await self._store.replace(
                    CONTAINER, partition, RECORD_KEY, claim_body, etag=existing.etag, ttl_seconds=self._ttl
                )
                return Claim(partition, taken.etag, digest)
            except (PreconditionFailedError, NotFoundError):
                continue
        return InFlight()

    def _decide(self, existing: Document, digest: str) -> Begin | None:
        """What an existing record means for this request; None for an abandoned claim to take over."""
        body = existing.body
        if body.get("bodyHash") != digest:
            return KeyReused()
        if body.get("state") == "done" and isinstance(body.get("response"), dict):
            return Replay(StoredResponse.from_json(body["response"]))
        started = body.get("startedAt")
        if isinstance(started, int | float) and self._clock() - started < self._lease:
            return InFlight()
        return None

    async def complete(self, claim: Claim, response: StoredResponse) -> None:
        body = {
            "kind": "idempotency",
            "state": "done",
            "bodyHash": claim.body_hash,
            "completedAt": self._clock(),
            "response": response.to_json(),
        }
        try:
            await self._store.replace(
                CONTAINER, claim.partition, RECORD_KEY, body, etag=claim.etag, ttl_seconds=self._ttl
            )
        except (PreconditionFailedError, NotFoundError):
            # Our lease ran out and another request took the key over; its outcome wins.
            return

    async def release(self, claim: Claim) -> None:
        try:
            await self._store.delete(CONTAINER, claim.partition, RECORD_KEY, etag=claim.etag)
        except (PreconditionFailedError, NotFoundError):
            return
