"""A ``DocumentStore`` wrapper that makes every state-store call a client span of the current trace.

Each span is named by the operation and the container (``read ledger``, ``write_many state``) and
carries how many documents it touched, never a partition or a key: those hold cart ids and
customer account numbers. A conditional write that loses its race (``ConflictError``,
``PreconditionFailedError``, ``NotFoundError``) is an answer the callers expect, so it names the
call's status without marking the span failed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from shared import telemetry
from shared.state.forwarding import ForwardingStore, StoreCall
from shared.state.store import (
    ConflictError,
    DocumentStore,
    NotFoundError,
    PreconditionFailedError,
    StoreError,
)

SERVICE = "state store"
_EXPECTED = (ConflictError, PreconditionFailedError, NotFoundError)
# Calls whose answer is a collection: the span says how many documents came back.
_FOUND = frozenset({"read_many", "query"})

_T = TypeVar("_T")


class TracedStore(ForwardingStore):
    def __init__(self, inner: DocumentStore, *, system: str) -> None:
        super().__init__(inner)
        self._system = system

    async def _forward(self, call: StoreCall, request: Callable[[], Awaitable[_T]]) -> _T:
        with telemetry.upstream_call(
            SERVICE,
            f"{call.operation} {call.container}",
            attributes={
                "db.system.name": self._system,
                "db.operation.name": call.operation,
                "db.collection.name": call.container,
                "connector.items": call.items,
            },
            expected=_EXPECTED,
        ) as upstream:
            result = await request()
            if call.operation in _FOUND and isinstance(result, dict | list):
                upstream.span.set_attribute("connector.found", len(result))
            elif call.operation == "write_many" and isinstance(result, list):
                refused = sum(1 for outcome in result if isinstance(outcome, StoreError))
                upstream.span.set_attribute("connector.refused", refused)
            return result
