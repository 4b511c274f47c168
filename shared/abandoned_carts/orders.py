"""Has the customer ordered since the cart last changed? (invariant 2, "where Retail Server allows it")

The look-up is ``POST SalesOrders/SearchOrders`` with ``orderSearchCriteria`` {CustomerAccountNumber,
StartDateTime, EndDateTime} and ``$top=1``: it covers online sales orders and store transactions of
the customer, which is the omnichannel check peers lack. Whether an app (client-credentials) token
may call it depends on the Commerce version and the Retail Server API role filter; where it may
not, set ``ORDER_CHECK=false`` and the step goes out on the cart re-check alone (a checked-out cart
leaves the cart table and is still caught). The action name and criteria fields are from Retail
Server's OData model, not verified against a live environment (see docs/notify.md).
"""

from __future__ import annotations

from datetime import datetime

from shared.retail_server.client import RetailServerClient


async def ordered_since(
    retail: RetailServerClient, oun: str, customer_id: str, since: datetime, until: datetime
) -> bool:
    return await retail.has_orders(oun, customer_id, since, until)
