"""Retail Server stand-in extension: a customer's orders, ``POST SalesOrders/SearchOrders``.

Mount it with ``Sandbox(extensions=[orders.add_routes])``. It answers from ``sandbox.data.orders``
(what ``checkout_cart`` and ``add_order`` leave behind: online orders and store transactions),
filtered by ``CustomerAccountNumber`` and the ``StartDateTime``/``EndDateTime`` window, newest
first, with the same guard (token, relying party, api-version, OUN) as every other Retail Server
route. Orders of every channel come back whatever the OUN header says, as a search of the channel
database and headquarters (``SearchLocationValue`` 3) does; ``SalesLines`` only with
``IncludeDetails``. The criteria are those of docs/reference/order-lookup.md; an unknown one is
refused, as OData refuses an unknown property.

``refuse(sandbox, status)`` makes the route answer as a Retail Server whose API role filter does
not let an application token search orders (documented roles: Employee, Customer).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from aiohttp import web
from pydantic import AwareDatetime, Field

from sandbox.data import SalesOrder, format_datetime
from sandbox.faults import Fault
from sandbox.retail_server import ROOT, RetailServerStandIn, _Body

if TYPE_CHECKING:
    from sandbox.server import Sandbox

ROUTE = f"POST {ROOT}/SalesOrders/SearchOrders"


class OrderSearchCriteria(_Body):
    customer_account_number: str | None = Field(default=None, alias="CustomerAccountNumber")
    start_date_time: AwareDatetime | None = Field(default=None, alias="StartDateTime")
    end_date_time: AwareDatetime | None = Field(default=None, alias="EndDateTime")
    sales_id: str | None = Field(default=None, alias="SalesId")
    search_location_value: int | None = Field(default=None, alias="SearchLocationValue", ge=0, le=3)
    include_details: bool | None = Field(default=None, alias="IncludeDetails")

    def admits(self, order: SalesOrder) -> bool:
        return (
            (self.customer_account_number is None or order.customer_id == self.customer_account_number)
            and (self.start_date_time is None or order.created_date_time >= self.start_date_time)
            and (self.end_date_time is None or order.created_date_time <= self.end_date_time)
            and (self.sales_id is None or order.sales_id == self.sales_id)
        )


class SearchOrdersBody(_Body):
    criteria: OrderSearchCriteria = Field(alias="orderSearchCriteria")


def order_wire(order: SalesOrder, *, details: bool = False) -> dict[str, Any]:
    wire: dict[str, Any] = {
        "Id": order.sales_id,
        "SalesId": order.sales_id,
        "CustomerId": order.customer_id,
        "ChannelId": order.channel_id,
        "StoreId": order.store_id,
        "TerminalId": order.terminal_id,
        "ChannelReferenceId": "" if order.terminal_id else order.sales_id,
        "CreatedDateTime": format_datetime(order.created_date_time),
        "TotalAmount": float(order.total_amount),
        "CurrencyCode": order.currency,
        "ExtensionProperties": [],
    }
    if details:
        wire["SalesLines"] = [line.wire() for line in order.lines]
    return wire


def refuse(sandbox: Sandbox, status: int = 401) -> Fault:
    """Every order search answers ``status`` from now on, as a Retail Server whose role filter
    keeps the action from application tokens (until ``sandbox.faults.clear()``)."""
    body = json.dumps(
        {
            "ErrorResourceId": "Microsoft_Dynamics_Commerce_Runtime_UserAuthorizationError",
            "LocalizedMessage": "The caller is not authorized to perform the operation SearchOrders.",
        }
    )
    return sandbox.faults.add(ROUTE, status=status, times=None, body=body)


def add_routes(app: web.Application, sandbox: Sandbox) -> None:
    retail = RetailServerStandIn(sandbox)

    async def search_orders(request: web.Request) -> web.Response:
        retail._guard(request)
        criteria = (await retail._body(request, SearchOrdersBody)).criteria
        orders = sorted(
            (order for order in sandbox.data.orders if criteria.admits(order)),
            key=lambda order: order.created_date_time,
            reverse=True,
        )
        details = bool(criteria.include_details)
        return retail._collection(request, "SalesOrder", [order_wire(o, details=details) for o in orders])

    app.router.add_route("POST", ROOT + "/SalesOrders/SearchOrders", search_orders)
