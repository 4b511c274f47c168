"""The refusals of notify, as plain functions of what was read: each answers a skip reason or None.

They run in the order the pipeline applies them; the cheap ones (the ledger's own knowledge, the
cart, the customer's consent) come before the look-ups they would make pointless.
"""

from __future__ import annotations

from shared.retail_server.models import Cart, CartStatus, CartType
from shared.state.ledger import LedgerEntry, LedgerStatus


def previous_step_refusal(entry: LedgerEntry, previous: LedgerEntry | None) -> str | None:
    """A reminder step goes out only after the step before it was sent."""
    if entry.step > 1 and (previous is None or previous.status is not LedgerStatus.SENT):
        return "previous_step_not_sent"
    return None


def cart_refusal(entry: LedgerEntry, cart: Cart | None) -> str | None:
    """Whether the cart, read again right before sending, still is the abandoned one (invariant 2)."""
    if cart is None:
        # Checking out turns the cart into an order and removes it from the cart table.
        return "cart_gone"
    if cart.cart_status_value == CartStatus.VOIDED:
        return "voided"
    if cart.cart_type_value != CartType.SHOPPING:
        return "checked_out"
    if cart.version != entry.cart_version or cart.modified_date_time != entry.modified_at:
        return "cart_changed"
    if not cart.active_lines:
        return "no_lines"
    return None


def superseded_refusal(entry: LedgerEntry, latest_cart_id: str | None) -> str | None:
    """The customer has a newer cart: the email is about that one, if any."""
    if latest_cart_id is not None and latest_cart_id != entry.cart_id:
        return "superseded"
    return None
