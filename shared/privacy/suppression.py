"""The suppression list: addresses that must never get a marketing email, whatever the consent.

Kept in the state store under ``suppress|<sha256 of the trimmed, lower-cased address>``; the
address itself is never stored, so the list can be checked without holding personal data. The
unsubscribe and erasure endpoints add to it; an operator may remove an entry.
"""

from __future__ import annotations

import hashlib
import re
from datetime import datetime

from shared.state.store import DocumentStore
from shared.timeutil import sortable

_KEY = "entry"
_HASH = re.compile(r"[0-9a-f]{64}")


def email_hash(email: str) -> str:
    return hashlib.sha256(email.strip().lower().encode("utf-8")).hexdigest()


def partition_of(email: str) -> str:
    return f"suppress|{email_hash(email)}"


class SuppressionList:
    def __init__(self, store: DocumentStore) -> None:
        self._store = store

    async def add(self, email: str, *, reason: str, now: datetime) -> None:
        """Suppress an address (idempotent: adding again keeps it suppressed, with the new reason)."""
        await self.add_hash(email_hash(email), reason=reason, now=now)

    async def add_hash(self, hashed: str, *, reason: str, now: datetime) -> None:
        """Suppress the address whose :func:`email_hash` is ``hashed`` (a signed unsubscribe link
        carries only the hash). Idempotent, like :meth:`add`."""
        if not _HASH.fullmatch(hashed):
            raise ValueError("not a SHA-256 hex digest of an address")
        body = {"kind": "suppression", "emailHash": hashed, "reason": reason, "addedAt": sortable(now)}
        await self._store.upsert("state", f"suppress|{hashed}", _KEY, body)

    async def contains_hash(self, hashed: str) -> bool:
        return await self._store.read("state", f"suppress|{hashed}", _KEY) is not None

    async def remove(self, email: str) -> bool:
        """Lift the suppression; False when the address was not on the list."""
        partition = partition_of(email)
        if await self._store.read("state", partition, _KEY) is None:
            return False
        await self._store.delete("state", partition, _KEY)
        return True

    async def contains(self, email: str) -> bool:
        return await self._store.read("state", partition_of(email), _KEY) is not None
