"""The per-customer frequency cap: at most one abandoned-cart sequence per customer per window,
across all carts and channels.

One document per customer (``state``, partition ``freqcap|<account>``) names the cart version
that holds the window; it is taken with a conditional write, so of two carts of one customer sent
at the same moment only one passes. The reminder steps of the holding cart version pass: their
timing is what ``REMINDER_STEPS`` asks for.

Notify reads the document once, together with its other state-store reads (:meth:`FrequencyCap.read`),
refuses a capped customer from that read before any product look-up (:meth:`CapSnapshot.refuses`),
and takes the window right before sending with a write conditional on the etag of that same read
(:meth:`FrequencyCap.reserve`), so a send costs one cap read and at most one cap write.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from shared.state.store import ConflictError, DocumentStore, PreconditionFailedError
from shared.timeutil import sortable

_MAX_CONDITIONAL_ATTEMPTS = 8
_KEY = "cap"


@dataclass(frozen=True)
class CapSnapshot:
    """The customer's cap document as one read found it (``None``: nobody holds the window)."""

    body: dict[str, object] | None
    etag: str | None

    def held_by(self, holder: str) -> bool:
        return self.body is not None and self.body.get("holder") == holder

    def refuses(self, holder: str, now: datetime, window: timedelta) -> bool:
        """Whether another cart version holds the window at ``now``."""
        if self.body is None or self.held_by(holder):
            return False
        sent_at = self.body.get("sentAt")
        return isinstance(sent_at, str) and datetime.fromisoformat(sent_at) > now - window


class FrequencyCap:
    def __init__(self, store: DocumentStore, window: timedelta, *, namespace: str = "freqcap") -> None:
        self._store = store
        self._window = window
        self._namespace = namespace

    @property
    def enabled(self) -> bool:
        return self._window > timedelta(0)

    def _partition(self, customer_id: str) -> str:
        return f"{self._namespace}|{customer_id}"

    def _ttl(self) -> int:
        return int(self._window.total_seconds()) + 86_400

    async def read(self, customer_id: str) -> CapSnapshot | None:
        """The customer's cap document now; None (no read at all) when the cap is off."""
        if not self.enabled:
            return None
        document = await self._store.read("state", self._partition(customer_id), _KEY)
        if document is None:
            return CapSnapshot(None, None)
        return CapSnapshot(dict(document.body), document.etag)

    def refuses(self, snapshot: CapSnapshot | None, holder: str, now: datetime) -> bool:
        """Whether :meth:`reserve` would refuse, judged from ``snapshot``: a skip that saves the
        look-ups of an email that could not go out. The reservation decides."""
        return snapshot is not None and snapshot.refuses(holder, now, self._window)

    async def reserve(
        self, customer_id: str, holder: str, now: datetime, *, seen: CapSnapshot | None = None
    ) -> bool:
        """Take the window for ``holder``; False when another cart version holds it.

        With ``seen`` (a :meth:`read` of this invocation), the first attempt writes conditionally
        on that read instead of reading again; a 412 or 409 means someone wrote meanwhile, and the
        decision is made again on a fresh read."""
        if not self.enabled:
            return True
        partition = self._partition(customer_id)
        for attempt in range(_MAX_CONDITIONAL_ATTEMPTS):
            snapshot = seen if seen is not None and attempt == 0 else await self.read(customer_id)
            assert snapshot is not None  # enabled
            if snapshot.held_by(holder):
                return True
            if snapshot.refuses(holder, now, self._window):
                return False
            previous = None if snapshot.body is None else snapshot.body.get("sentAt")
            body = {
                "kind": "frequency-cap",
                "holder": holder,
                "sentAt": sortable(now),
                "previousAt": previous,
            }
            try:
                if snapshot.etag is None:
                    await self._store.create("state", partition, _KEY, body, ttl_seconds=self._ttl())
                else:
                    await self._store.replace(
                        "state", partition, _KEY, body, etag=snapshot.etag, ttl_seconds=self._ttl()
                    )
            except (ConflictError, PreconditionFailedError):
                continue
            return True
        return False

    async def release(self, customer_id: str, holder: str) -> None:
        """Give the window back when the email did not go out after all."""
        if not self.enabled:
            return
        partition = self._partition(customer_id)
        document = await self._store.read("state", partition, _KEY)
        if document is None or document.body.get("holder") != holder:
            return
        previous = document.body.get("previousAt")
        try:
            if previous is None:
                await self._store.delete("state", partition, _KEY, etag=document.etag)
            else:
                body = {"kind": "frequency-cap", "holder": None, "sentAt": previous, "previousAt": None}
                await self._store.replace(
                    "state", partition, _KEY, body, etag=document.etag, ttl_seconds=self._ttl()
                )
        except PreconditionFailedError:
            return
