"""What notify asks the recovery analytics right before it sends a reminder: which group is this
cart in? A held-out cart is recorded ``held_out`` instead of being sent; either way the cart is
enrolled in its group, in the same store round trip as the step's outcome, so conversion tracking
follows it.

Only a first reminder (step 1) decides: a cart keeps the group it got then, and a held-out cart has
no later steps (they follow a sent step only). A dry run (the preview provider) never holds out and
enrols nothing: nobody was mailed, so there is nothing to measure.

The group is decided after every check has passed, so the held-out carts are exactly those that
would have been mailed. A mailed cart is enrolled with its ``sent`` record (a send the provider
refused, or whose outcome is uncertain, is not), a held-out one with its ``held_out`` record.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from shared.recovery.holdout import WeakSaltError, is_held_out
from shared.recovery.records import RecoveryStore, TrackedCart, order_key, product_ids_of
from shared.retail_server.models import Cart
from shared.secrets import SecretNotFoundError, SecretSource
from shared.settings import Settings
from shared.state.ledger import LedgerEntry
from shared.state.store import DocumentStore

logger = logging.getLogger(__name__)

# The first conversion check of a newly enrolled cart, and the spacing of the later ones.
RECHECK_INTERVAL = timedelta(hours=6)


@dataclass(frozen=True)
class HoldoutConfig:
    percent: int = 0
    period_days: int = 30
    salt_secret_name: str = "holdout-salt"  # noqa: S105 (a name, not a secret)

    @classmethod
    def from_settings(cls, settings: Settings) -> HoldoutConfig:
        return cls(
            percent=settings.holdout_percent,
            period_days=settings.holdout_period_days,
            salt_secret_name=settings.holdout_salt_secret_name,
        )


class Experiment:
    def __init__(
        self,
        store: DocumentStore,
        config: HoldoutConfig,
        secrets: SecretSource | None,
        *,
        dry_run: bool,
    ) -> None:
        self._records = RecoveryStore(store)
        self._config = config
        self._secrets = secrets
        self._dry_run = dry_run
        self._salt_fault_logged = False

    async def enrolment(
        self, entry: LedgerEntry, cart: Cart, currency: object, now: datetime
    ) -> TrackedCart | None:
        """The cart's group, decided at its first step (no store round trip: the salt is cached);
        None for a later step or a dry run. Notify records it with the step's outcome (:meth:`enrol`)."""
        if self._dry_run or entry.step != 1:
            return None
        group = "holdout" if await self._assigned_holdout(entry.customer_id, now) else "mailed"
        return TrackedCart(
            cart_id=entry.cart_id,
            cart_version=entry.cart_version,
            oun=entry.oun,
            customer_id=entry.customer_id,
            group=group,
            enrolled_at=now,
            enrolled_key=order_key(now, entry.cart_id, entry.cart_version),
            product_ids=product_ids_of(cart.active_lines),
            currency=currency if isinstance(currency, str) else None,
            next_check_at=now + RECHECK_INTERVAL,
        )

    async def enrol(self, tracked: TrackedCart) -> None:
        """Record the cart in its group, once (a cart recorded before keeps its first record)."""
        await self._records.enrol(tracked)

    async def _assigned_holdout(self, customer_id: str, now: datetime) -> bool:
        if self._config.percent <= 0 or self._secrets is None:
            return False
        try:
            salt = (await self._secrets.get(self._config.salt_secret_name)).encode("utf-8")
            return is_held_out(
                salt, customer_id, now, percent=self._config.percent, period_days=self._config.period_days
            )
        except (SecretNotFoundError, WeakSaltError) as exc:
            # A configuration fault must not stop the emails: everyone is mailed (no holdout) and
            # the operator is told once per process.
            if not self._salt_fault_logged:
                self._salt_fault_logged = True
                logger.error(
                    "HOLDOUT_PERCENT is %d but the holdout salt %r (HOLDOUT_SALT_SECRET_NAME) %s; "
                    "no cart is held out until it is fixed",
                    self._config.percent,
                    self._config.salt_secret_name,
                    "is not set" if isinstance(exc, SecretNotFoundError) else "is shorter than 16 bytes",
                )
            return False
