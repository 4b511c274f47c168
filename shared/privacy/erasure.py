"""Erasure: forget a customer in the connector's own state, and never mail the address again.

The connector holds little personal data: the ledger (entries carry the customer account), the
customer's latest-cart pointers (``ledger``, partition ``customer|<oun>|<account>``) and its
frequency-cap document (``state``, partition ``freqcap|<account>``). Erasure deletes those and puts
the address's hash on the suppression list (reason ``erasure``), so a later detection run cannot
mail it again. The customer record itself lives in Commerce and F&O, outside the connector.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, model_validator

from shared.privacy.suppression import SuppressionList
from shared.state.store import ContainerName, DocumentStore, NotFoundError

# Ledger entries are deleted in pages of this size, until a query finds none.
PAGE_SIZE = 100
# A bound on the loop: 1000 pages is 100 000 entries, far more than one customer can have.
MAX_PAGES = 1000


class ErasureRequest(BaseModel):
    """The body of ``POST /api/privacy/erasure``: an address, an account, or both."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, str_strip_whitespace=True)

    email: str | None = Field(default=None, min_length=3, max_length=320, pattern=r"^[^@\s]+@[^@\s]+$")
    customer_account: str | None = Field(
        default=None, alias="customerAccount", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$"
    )

    @model_validator(mode="after")
    def _one_at_least(self) -> ErasureRequest:
        if self.email is None and self.customer_account is None:
            raise ValueError("give email, customerAccount, or both")
        return self


@dataclass(frozen=True)
class ErasureResult:
    suppressed: bool
    ledger_entries_deleted: int
    pointers_deleted: int

    def body(self) -> dict[str, bool | int]:
        return {
            "suppressed": self.suppressed,
            "ledgerEntriesDeleted": self.ledger_entries_deleted,
            "pointersDeleted": self.pointers_deleted,
        }


class ErasureIncompleteError(RuntimeError):
    """Ledger entries were still found after :data:`MAX_PAGES` pages; erasing again continues."""


async def erase(
    store: DocumentStore,
    request: ErasureRequest,
    *,
    operating_unit_numbers: Sequence[str],
    now: datetime,
) -> ErasureResult:
    """Suppress the address and delete the account's documents. Idempotent: again finds nothing."""
    suppressed = False
    if request.email is not None:
        await SuppressionList(store).add(request.email, reason="erasure", now=now)
        suppressed = True
    entries = pointers = 0
    account = request.customer_account
    if account is not None:
        entries = await _delete_ledger_entries(store, account)
        for oun in operating_unit_numbers:
            pointers += await _delete(store, "ledger", f"customer|{oun}|{account}", "latest")
        # The real frequency window and the dry run's (shared/abandoned_carts/notify.py).
        for namespace in ("freqcap", "freqcap-dryrun"):
            await _delete(store, "state", f"{namespace}|{account}", "cap")
    return ErasureResult(suppressed, entries, pointers)


async def _delete_ledger_entries(store: DocumentStore, account: str) -> int:
    deleted = 0
    for _ in range(MAX_PAGES):
        page = await store.query("ledger", equals={"customerId": account}, limit=PAGE_SIZE)
        if not page:
            return deleted
        for document in page:
            deleted += await _delete(store, "ledger", document.partition, document.key)
    raise ErasureIncompleteError(f"more than {MAX_PAGES * PAGE_SIZE} ledger entries; erase again")


async def _delete(store: DocumentStore, container: ContainerName, partition: str, key: str) -> int:
    try:
        await store.delete(container, partition, key)
    except NotFoundError:
        return 0
    return 1
