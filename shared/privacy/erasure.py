"""Erasure: forget a customer in the connector's own state and at the email provider, and never
mail the address again.

Places, in order, and what the answer says about each:

1. the suppression list: the address's hash, reason ``erasure``, so no later detection run mails
   it again (``suppressed``);
2. the ledger: the account's entries, its latest-cart pointers (``ledger``, partition
   ``customer|<oun>|<account>``) and its frequency-cap documents (``state``, ``freqcap|<account>``
   and the dry run's ``freqcap-dryrun|<account>``) (``ledgerEntriesDeleted``, ``pointersDeleted``);
3. the email previews of the account or address in ``PREVIEW_DIR`` (``previewsDeleted``), found
   from their file names (shared/email/preview.py);
4. the email provider the connector sends through, when it can erase
   (:class:`shared.email.base.ErasableProvider`: Emarsys deletes the contact, the webhook receiver
   gets ``customer.erased``) (``provider``);
5. what stays elsewhere and must be erased there (``retained``): the customer record in Commerce
   and F&O, and whatever a provider keeps that the connector cannot delete (SendGrid).

With the ledger go the account's recovery records (shared/recovery: its tracked carts, their
holdout group and the conversions found for them, partition ``recovery|<account>``)
(``recoveryRecordsDeleted``). Every step is idempotent, so erasing again after a failure finishes
the job.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from shared.email.base import EmailProvider, ErasableProvider, ErasureSubject, ProviderErasure, retained_data
from shared.email.preview import delete_previews
from shared.privacy.suppression import SuppressionList
from shared.recovery.records import erase_customer
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


# Always kept outside the connector: it never owned these.
COMMERCE_RETAINS = (
    "Dynamics 365 Commerce and Finance and Operations keep the customer record, its carts and its "
    "orders; erase the customer there."
)


@dataclass(frozen=True)
class ProviderOutcome:
    name: str
    action: str
    detail: str

    def body(self) -> dict[str, str]:
        return {"name": self.name, "action": self.action, "detail": self.detail}


@dataclass(frozen=True)
class ErasureResult:
    suppressed: bool
    ledger_entries_deleted: int
    pointers_deleted: int
    previews_deleted: int
    provider: ProviderOutcome
    retained: tuple[str, ...]
    recovery_records_deleted: int = 0

    def body(self) -> dict[str, Any]:
        return {
            "suppressed": self.suppressed,
            "ledgerEntriesDeleted": self.ledger_entries_deleted,
            "pointersDeleted": self.pointers_deleted,
            "previewsDeleted": self.previews_deleted,
            "recoveryRecordsDeleted": self.recovery_records_deleted,
            "provider": self.provider.body(),
            "retained": list(self.retained),
        }


class ErasureIncompleteError(RuntimeError):
    """Ledger entries were still found after :data:`MAX_PAGES` pages; erasing again continues."""


async def erase(
    store: DocumentStore,
    request: ErasureRequest,
    *,
    operating_unit_numbers: Sequence[str],
    preview_dir: Path,
    provider: EmailProvider,
    configured_provider: str,
    now: datetime,
) -> ErasureResult:
    """Erase at every place the connector reaches (module docstring). Idempotent: again finds
    nothing. A provider failure raises its :class:`shared.email.base.ProviderError` after the
    connector's own data is gone; repeating the request finishes the job."""
    suppressed = False
    if request.email is not None:
        await SuppressionList(store).add(request.email, reason="erasure", now=now)
        suppressed = True
    entries = pointers = recovery = 0
    account = request.customer_account
    if account is not None:
        entries = await _delete_ledger_entries(store, account)
        for oun in operating_unit_numbers:
            pointers += await _delete(store, "ledger", f"customer|{oun}|{account}", "latest")
        # The real frequency window and the dry run's (shared/abandoned_carts/notify.py).
        for namespace in ("freqcap", "freqcap-dryrun"):
            await _delete(store, "state", f"{namespace}|{account}", "cap")
        recovery = await erase_customer(store, account)
    previews = await asyncio.to_thread(delete_previews, preview_dir, customer_id=account, email=request.email)
    outcome = await _erase_at_provider(provider, ErasureSubject(email=request.email, customer_id=account))
    retained = [COMMERCE_RETAINS]
    kept = retained_data(provider)
    if kept is not None:
        retained.append(kept)
    if provider.name == "preview" and configured_provider != "preview":
        retained.append(
            f"DRY_RUN is on, so the connector did not reach EMAIL_PROVIDER={configured_provider}: erase "
            "the person there, or repeat this erasure once the connector sends for real."
        )
    return ErasureResult(suppressed, entries, pointers, previews, outcome, tuple(retained), recovery)


async def _erase_at_provider(provider: EmailProvider, subject: ErasureSubject) -> ProviderOutcome:
    if isinstance(provider, ErasableProvider):
        done: ProviderErasure = await provider.erase(subject)
        return ProviderOutcome(provider.name, done.action, done.detail)
    if provider.name == "preview":
        return ProviderOutcome(
            "preview", "not_applicable", "no email left the connector; its previews are in previewsDeleted"
        )
    return ProviderOutcome(
        provider.name, "not_supported", f"the connector cannot delete data at {provider.name}; see retained"
    )


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
