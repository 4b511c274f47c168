"""Retail Server stand-in extension: a customer's orders, ``POST SalesOrders/SearchOrders``.

Mount it with ``Sandbox(extensions=[orders.add_routes])``. It answers from ``sandbox.data.orders``
(what ``checkout_cart`` leaves behind), filtered by ``CustomerAccountNumber`` and the
``StartDateTime``/``EndDateTime`` window, newest first, with the same guard (token, relying party,
api-version, OUN) as every other Retail Server route.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web
from pydantic import AwareDatetime, Field

from sandbox.data import SalesOrder, format_datetime
from sandbox.retail_server import ROOT, RetailServerStandIn, _Body

if TYPE_CHECKING:
    from sandbox.server import Sandbox


class OrderSearchCriteria(_Body):
    customer_account_number: str | None = Field(default=None, alias="CustomerAccountNumber")
    start_date_time: AwareDatetime | None = Field(default=None, alias="StartDateTime")
    end_date_time: AwareDatetime | None = Field(default=None, alias="EndDateTime")
    sales_id: str | None = Field(default=None, alias="SalesId")

    def admits(self, order: SalesOrder) -> bool:
        return (
            (self.customer_account_number is None or order.customer_id == self.customer_account_number)
            and (self.start_date_time is None or order.created_date_time >= self.start_date_time)
            and (self.end_date_time is None or order.created_date_time <= self.end_date_time)
            and (self.sales_id is None or order.sales_id == self.sales_id)
        )


class SearchOrdersBody(_Body):
    criteria: OrderSearchCriteria = Field(alias="orderSearchCriteria")


def order_wire(order: SalesOrder) -> dict[str, Any]:
    return {
        "Id": order.sales_id,
        "SalesId": order.sales_id,
        "CustomerId": order.customer_id,
        "ChannelId": order.channel_id,
        "CreatedDateTime": format_datetime(order.created_date_time),
        "TotalAmount": float(order.total_amount),
        "ExtensionProperties": [],
    }


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
        return retail._collection(request, "SalesOrder", [order_wire(order) for order in orders])

    app.router.add_route("POST", ROOT + "/SalesOrders/SearchOrders", search_orders)
