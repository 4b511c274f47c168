"""Retail Server OData client with app (client-credentials) authentication.

Every call goes to ``{RETAIL_SERVER_URL}/Commerce/{path}?api-version=...`` with the
``Authorization: id_token <token>`` scheme Retail Server expects for app tokens and the channel's
``OUN`` header. A 401 answer drops the cached token and tries once more with a fresh one, which
covers a token revoked or a relying party re-registered while the process was running.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from shared import telemetry
from shared.http import HttpClient, UpstreamError, UpstreamResponse, UpstreamStatusError
from shared.identity import TokenProvider, scope_for
from shared.retail_server.models import (
    Cart,
    CartType,
    ChannelConfiguration,
    Customer,
    MediaLocation,
    SalesOrder,
    SimpleProduct,
)

SERVICE = "Retail Server"
_SEARCH_LOCATION_LOCAL = 1
# SearchLocation.All: the channel database and headquarters, so orders of every channel are found.
_SEARCH_LOCATION_ALL = 3
ModelT = TypeVar("ModelT", bound=BaseModel)

# One adapter per entity model, built on first use and kept: building one (50-120 us here) would
# otherwise be paid on every collection call, every page of carts and every look-up.
_LIST_ADAPTERS: dict[type[BaseModel], TypeAdapter[Any]] = {}


def list_adapter(model: type[ModelT]) -> TypeAdapter[list[ModelT]]:
    """The adapter validating an OData collection of ``model``; the same one on every call."""
    adapter = _LIST_ADAPTERS.get(model)
    if adapter is None:
        adapter = _LIST_ADAPTERS[model] = TypeAdapter(list[model])  # type: ignore[valid-type]
    return adapter


class RetailServerError(UpstreamStatusError):
    """Retail Server answered with an error; carries its ``ErrorResourceId`` when it sent one."""

    def __init__(self, response: UpstreamResponse, path: str) -> None:
        self.error_resource_id: str | None = None
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict):
            resource = body.get("ErrorResourceId") or body.get("errorResourceId")
            self.error_resource_id = str(resource) if resource else None
        hint = ""
        if response.status == 401:
            hint = (
                ": the app is not authorised; check that its client id is a relying party in Commerce "
                "shared parameters, the server resource id matches RETAIL_SERVER_AUDIENCE, and job 1110 ran"
            )
        detail = f" {self.error_resource_id}" if self.error_resource_id else ""
        super().__init__(SERVICE, response, f"{path} answered {response.status}{detail}{hint}")


class RetailServerContractError(UpstreamError):
    """Retail Server answered 200 with a body that does not match the entity we expect."""


class RetailServerUnreadableError(UpstreamError):
    """Retail Server answered 200 with a body that is not JSON at all: a gateway's page or a cut
    answer rather than a contract mismatch, so unlike :class:`RetailServerContractError` a later
    try may well succeed."""


class CartSearchCriteria(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    cart_id: str | None = Field(default=None, serialization_alias="CartId")
    customer_account_number: str | None = Field(default=None, serialization_alias="CustomerAccountNumber")
    include_anonymous: bool = Field(default=False, serialization_alias="IncludeAnonymous")
    cart_type_value: int | None = Field(default=CartType.SHOPPING, serialization_alias="CartTypeValue")
    last_modified_from: datetime | None = Field(default=None, serialization_alias="LastModifiedDateTimeFrom")
    last_modified_to: datetime | None = Field(default=None, serialization_alias="LastModifiedDateTimeTo")

    def wire(self) -> dict[str, Any]:
        body: dict[str, Any] = {}
        for name, value in self.model_dump(by_alias=True, exclude_none=True).items():
            body[name] = format_datetime(value) if isinstance(value, datetime) else value
        return body


def format_datetime(value: datetime) -> str:
    """An Edm.DateTimeOffset literal in UTC with every microsecond, e.g. ``2026-11-22T09:30:00.123456Z``.

    Retail Server compares search bounds at its own precision (100-ns ticks), so a bound must go on
    the wire exactly as the caller holds it: detection compares the carts it gets back with its
    cursor, and a bound cut coarser than the cursor (milliseconds, say) would bring back carts the
    cursor then drops, or shift the ``$skip`` count it keeps for carts sharing one instant.
    """
    if value.tzinfo is None:
        raise ValueError("naive datetimes are ambiguous; pass an aware UTC datetime")
    text = value.astimezone(UTC).isoformat(timespec="microseconds")
    return text.replace("+00:00", "Z")


class RetailServerClient:
    def __init__(
        self,
        http: HttpClient,
        tokens: TokenProvider,
        *,
        base_url: str,
        audience: str,
        api_version: str = "7.3",
    ) -> None:
        self._http = http
        self._tokens = tokens
        self._root = base_url.rstrip("/") + "/Commerce/"
        self._scope = scope_for(audience)
        telemetry.name_scope(self._scope, "retail_server")
        self._api_version = api_version

    async def _call(
        self,
        method: str,
        path: str,
        oun: str,
        *,
        body: Any = None,
        query: dict[str, str] | None = None,
    ) -> Any:
        params = {**(query or {}), "api-version": self._api_version}
        for attempt in (1, 2):
            token = await self._tokens.get_token(self._scope)
            response = await self._http.send(
                method,
                self._root + path,
                service=SERVICE,
                headers={
                    "Authorization": f"id_token {token}",
                    "OUN": oun,
                    "Accept": "application/json",
                    "Accept-Charset": "UTF-8",
                },
                params=params,
                json_body=body,
                route=path,
            )
            if response.status == 401 and attempt == 1:
                self._tokens.invalidate(self._scope)
                continue
            if response.status != 200:
                raise RetailServerError(response, path)
            try:
                return response.json()
            except ValueError:
                raise RetailServerUnreadableError(
                    SERVICE,
                    f"{path} answered with a body that is not JSON",
                    correlation_id=response.correlation_id,
                ) from None
        raise AssertionError("unreachable")

    async def _collection(
        self, model: type[ModelT], method: str, path: str, oun: str, **kwargs: Any
    ) -> list[ModelT]:
        payload = await self._call(method, path, oun, **kwargs)
        if not isinstance(payload, dict) or not isinstance(payload.get("value"), list):
            raise RetailServerContractError(
                SERVICE, f"{path} did not answer with an OData collection", correlation_id="-"
            )
        try:
            return list_adapter(model).validate_python(payload["value"])
        except ValidationError as exc:
            raise RetailServerContractError(
                SERVICE,
                f"{path} returned entities that do not match the {model.__name__} contract: "
                f"{exc.error_count()} error(s), first at {exc.errors()[0]['loc']}",
                correlation_id="-",
            ) from None

    async def search_carts(
        self,
        oun: str,
        criteria: CartSearchCriteria,
        *,
        top: int,
        skip: int = 0,
    ) -> list[Cart]:
        query = {"$top": str(top), "$orderby": "ModifiedDateTime,Id"}
        if skip:
            query["$skip"] = str(skip)
        return await self._collection(
            Cart, "POST", "Carts/Search", oun, body={"cartSearchCriteria": criteria.wire()}, query=query
        )

    async def get_cart(self, oun: str, cart_id: str) -> Cart | None:
        carts = await self.search_carts(
            oun, CartSearchCriteria(cart_id=cart_id, cart_type_value=None, include_anonymous=True), top=1
        )
        return carts[0] if carts else None

    async def has_orders(self, oun: str, customer_id: str, since: datetime, until: datetime) -> bool:
        """Whether ``SalesOrders/SearchOrders`` finds an order of the customer in [since, until]."""
        body = {
            "orderSearchCriteria": {
                "CustomerAccountNumber": customer_id,
                "StartDateTime": format_datetime(since),
                "EndDateTime": format_datetime(until),
            }
        }
        payload = await self._call("POST", "SalesOrders/SearchOrders", oun, body=body, query={"$top": "1"})
        if not isinstance(payload, dict) or not isinstance(payload.get("value"), list):
            raise RetailServerContractError(
                SERVICE,
                "SalesOrders/SearchOrders did not answer with an OData collection",
                correlation_id="-",
            )
        return len(payload["value"]) > 0

    async def search_orders(
        self, oun: str, customer_id: str, since: datetime, until: datetime, *, top: int, skip: int = 0
    ) -> list[SalesOrder]:
        """The customer's orders and store transactions created in [since, until], every channel,
        with their lines (``SalesOrders/SearchOrders``; criteria in docs/reference/order-lookup.md)."""
        body = {
            "orderSearchCriteria": {
                "CustomerAccountNumber": customer_id,
                "StartDateTime": format_datetime(since),
                "EndDateTime": format_datetime(until),
                "SearchLocationValue": _SEARCH_LOCATION_ALL,
                "IncludeDetails": True,
            }
        }
        query = {"$top": str(top)}
        if skip:
            query["$skip"] = str(skip)
        return await self._collection(
            SalesOrder, "POST", "SalesOrders/SearchOrders", oun, body=body, query=query
        )

    async def get_customers(self, oun: str, account_numbers: Sequence[str]) -> list[Customer]:
        if not account_numbers:
            return []
        body = {"accountNumbers": list(account_numbers), "searchLocationValue": _SEARCH_LOCATION_LOCAL}
        return await self._collection(
            Customer,
            "POST",
            "Customers/GetByAccountNumbers",
            oun,
            body=body,
            query={"$top": str(len(account_numbers))},
        )

    async def get_products(
        self, oun: str, channel_id: int, product_ids: Sequence[int]
    ) -> list[SimpleProduct]:
        if not product_ids:
            return []
        body = {"channelId": channel_id, "productIds": list(product_ids)}
        return await self._collection(
            SimpleProduct, "POST", "Products/GetByIds", oun, body=body, query={"$top": str(len(product_ids))}
        )

    async def get_media_locations(self, oun: str, channel_id: int, product_id: int) -> list[MediaLocation]:
        path = f"Products({int(product_id)})/GetMediaLocations(channelId={int(channel_id)},catalogId=0)"
        return await self._collection(MediaLocation, "GET", path, oun)

    async def get_channel_configuration(self, oun: str) -> ChannelConfiguration:
        payload = await self._call("POST", "OrgUnits/GetOrgUnitConfiguration", oun, body={})
        try:
            return ChannelConfiguration.model_validate(payload)
        except ValidationError:
            raise RetailServerContractError(
                SERVICE, "GetOrgUnitConfiguration did not return a ChannelConfiguration", correlation_id="-"
            ) from None
