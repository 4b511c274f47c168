"""Has the customer ordered since the cart last changed? (invariant 2, "where Retail Server allows it")

The look-up is ``POST SalesOrders/SearchOrders`` with ``orderSearchCriteria`` {CustomerAccountNumber,
StartDateTime, EndDateTime} and ``$top=1``: it covers online sales orders and store transactions of
the customer, which is the omnichannel check peers lack. Whether an app (client-credentials) token
may call it depends on the Commerce version and the Retail Server API role filter; where it may
not, set ``ORDER_CHECK=false`` and the step goes out on the cart re-check alone (a checked-out cart
leaves the cart table and is still caught). The action name and criteria fields are from Retail
Server's OData model, not verified against a live environment (see docs/reference/order-lookup.md).
"""

from __future__ import annotations

import logging
from datetime import datetime

from shared.retail_server.client import RetailServerClient, RetailServerError

logger = logging.getLogger(__name__)

# Answers that say this Retail Server will not do the look-up for an app token at all (the action
# is unknown to its version, or the API role filter refuses it), as opposed to a passing failure.
_UNAVAILABLE = frozenset({400, 401, 403, 404, 405, 501})


class OrderCheck:
    """The order look-up of one process. Where Retail Server refuses it, the check turns itself off
    for the process with one error log that tells the operator what to do, rather than failing
    every cart: the cart re-check still catches a cart that was checked out."""

    def __init__(self, retail: RetailServerClient, *, enabled: bool) -> None:
        self._retail = retail
        self.enabled = enabled

    async def ordered_since(self, oun: str, customer_id: str, since: datetime, until: datetime) -> bool:
        if not self.enabled:
            return False
        try:
            return await self._retail.has_orders(oun, customer_id, since, until)
        except RetailServerError as exc:
            if exc.status not in _UNAVAILABLE:
                raise
            self.enabled = False
            logger.error(
                "SalesOrders/SearchOrders is not available to this app on channel %s (%s); the "
                "order check is off until the app restarts. Set ORDER_CHECK=false to silence this, "
                "or allow the look-up for the app in Retail Server.",
                oun,
                exc,
            )
            return False
