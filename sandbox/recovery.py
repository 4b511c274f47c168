"""Orders after the reminders, with a known true lift: what the recovery report must measure.

``place_orders`` gives each mailed or held-out cart an order within the attribution window with the
scenario's probability (``baseline`` for held-out carts, ``mailed`` for mailed ones), from a seed,
so the same run always buys the same: some at a store's till, some without any product of the cart.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sandbox.data import STORE_CHANNEL_IDS, SalesOrder, SandboxData

_STORES_BY_OUN = {"128": ["HOU-01", "HOU-02"], "067": ["BER-01"]}
assert all(store in STORE_CHANNEL_IDS for stores in _STORES_BY_OUN.values() for store in stores)


@dataclass(frozen=True)
class LiftScenario:
    """The true conversion rates: ``mailed - baseline`` is the lift the report should find."""

    baseline: float = 0.12
    mailed: float = 0.18
    # Of the orders: the share rung up at a store, and the share without a product of the cart.
    store_share: float = 0.3
    other_products_share: float = 0.25
    seed: int = 10

    @property
    def lift(self) -> float:
        return self.mailed - self.baseline


@dataclass(frozen=True)
class TrackedCartView:
    """What the simulation needs of a tracked cart (the connector's record, read back)."""

    customer_id: str
    oun: str
    product_ids: tuple[int, ...]
    mailed: bool
    enrolled_at: datetime


def place_orders(
    data: SandboxData, carts: Iterable[TrackedCartView], scenario: LiftScenario, window: timedelta
) -> list[SalesOrder]:
    """Orders for the carts that convert, inside ``window`` after each cart's first reminder."""
    rng = random.Random(scenario.seed)
    shelf = sorted(p.record_id for p in data.products.values() if not p.is_gift_card)
    placed: list[SalesOrder] = []
    for cart in sorted(carts, key=lambda c: (c.enrolled_at, c.customer_id)):
        draws = [rng.random() for _ in range(4)]
        if draws[0] >= (scenario.mailed if cart.mailed else scenario.baseline):
            continue
        at = cart.enrolled_at + timedelta(seconds=60 + draws[1] * (window.total_seconds() - 120))
        in_store = draws[2] < scenario.store_share
        others = [p for p in shelf if p not in cart.product_ids]
        if draws[3] < scenario.other_products_share or not cart.product_ids:
            product = others[int(draws[3] * 1_000_003) % len(others)]
        else:
            product = cart.product_ids[int(draws[3] * 1_000_003) % len(cart.product_ids)]
        stores = _STORES_BY_OUN.get(cart.oun, ["HOU-01"])
        placed.append(
            data.add_order(
                customer_id=cart.customer_id,
                at=at,
                oun=cart.oun,
                lines=[(product, 1)],
                in_store=stores[int(draws[2] * 997) % len(stores)] if in_store else None,
            )
        )
    return placed
