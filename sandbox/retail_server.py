"""Retail Server (Commerce Scale Unit) stand-in under ``/rs/Commerce/``.

It enforces what the real service requires of an app caller (reference/retail-server.md, 1-5):
``Authorization: id_token <jwt>`` with the Retail Server audience from an app on the relying-party
allow-list, ``api-version=7.3``, and an ``OUN`` header naming a known channel (a string: "067" is
not "67"). Bodies are the EDMX action parameters (camelCase keys, PascalCase entity fields);
unknown properties are refused as OData does. Collections answer ``{"value": [...]}``.

The ``ErrorResourceId`` values are the sandbox's own, in Commerce's naming style: the real ids for
these cases are not documented.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from sandbox.correlation import request_id
from sandbox.data import CART_SHOPPING, BulkCarts, Cart, Channel, merged_page, parse_ticks, ticks
from sandbox.entra import TokenRejectedError
from sandbox.faults import Fault, FaultInjector

if TYPE_CHECKING:
    from sandbox.server import Sandbox

API_VERSION = "7.3"
ROOT = "/rs/Commerce"
_RUNTIME = "Microsoft_Dynamics_Commerce_Runtime_"
_ORDERABLE = {"ModifiedDateTime", "BeginDateTime", "Id"}
_METADATA = "$metadata#Collection(Microsoft.Dynamics.Commerce.Runtime.DataModel.{})"

BodyT = TypeVar("BodyT", bound=BaseModel)

# Every Products(id)/GetMediaLocations(...) call (Products/GetByIds is "Products/", not matched).
MEDIA_ROUTE = f"GET {ROOT}/Products("
MEDIA_FAULT_KINDS = ("timeout", "reset", "malformed", "<HTTP status 400-599>")


def check_media_fault(kind: str) -> str:
    """``kind`` if it names a media fault, else ``ValueError``."""
    if kind in MEDIA_FAULT_KINDS[:-1] or (kind.isdigit() and 400 <= int(kind) <= 599):
        return kind
    raise ValueError(f"media fault must be one of {', '.join(MEDIA_FAULT_KINDS)}, not {kind!r}")


def add_media_fault(faults: FaultInjector, kind: str) -> Fault:
    """A standing fault on the media route, for ``Sandbox(media_fault=...)`` and
    ``python -m sandbox --media-fault``: an HTTP status (``404``, ``500``...), ``timeout`` (held
    past any client timeout), ``reset`` (connection dropped) or ``malformed`` (200, not JSON).
    It lasts until ``faults.clear()``."""
    check_media_fault(kind)
    if kind == "timeout":
        return faults.add(MEDIA_ROUTE, timeout=True, times=None)
    if kind == "reset":
        return faults.add(MEDIA_ROUTE, reset=True, times=None)
    if kind == "malformed":
        return faults.add(
            MEDIA_ROUTE,
            status=200,
            times=None,
            body='{"value": [{"Uri": ',
            headers={"Content-Type": "application/json"},
        )
    body = json.dumps({"ErrorResourceId": _RUNTIME + "InjectedFault", "LocalizedMessage": "Injected fault."})
    return faults.add(MEDIA_ROUTE, status=int(kind), times=None, body=body)


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=False)


def _edm_ticks(value: object) -> object:
    if not isinstance(value, str):
        raise ValueError("must be an Edm.DateTimeOffset string")
    return parse_ticks(value)


# A DateTimeOffset parameter kept as 100-ns ticks: the service compares at its full precision,
# never at the millisecond or microsecond a client may have cut its own values to.
EdmTicks = Annotated[int, BeforeValidator(_edm_ticks)]


class CartSearchCriteria(_Body):
    cart_id: str | None = Field(default=None, alias="CartId")
    expected_cart_version: int | None = Field(default=None, alias="ExpectedCartVersion")
    customer_account_number: str | None = Field(default=None, alias="CustomerAccountNumber")
    include_anonymous: bool | None = Field(default=None, alias="IncludeAnonymous")
    suspended_only: bool | None = Field(default=None, alias="SuspendedOnly")
    cart_type_value: int | None = Field(default=None, alias="CartTypeValue")
    last_modified_from: EdmTicks | None = Field(default=None, alias="LastModifiedDateTimeFrom")
    last_modified_to: EdmTicks | None = Field(default=None, alias="LastModifiedDateTimeTo")

    def admits(self, cart: Cart) -> bool:
        checks = (
            self.cart_id is None or cart.id == self.cart_id,
            self.customer_account_number is None or cart.customer_id == self.customer_account_number,
            bool(self.include_anonymous) or cart.customer_id != "",
            not self.suspended_only,
            self.cart_type_value is None or cart.cart_type_value == self.cart_type_value,
            self.last_modified_from is None or cart.modified_ticks >= self.last_modified_from,
            self.last_modified_to is None or cart.modified_ticks <= self.last_modified_to,
        )
        return all(checks)


class CartSearchBody(_Body):
    criteria: CartSearchCriteria = Field(alias="cartSearchCriteria")


class CustomersByAccountNumbersBody(_Body):
    account_numbers: list[str] = Field(alias="accountNumbers")
    search_location_value: int = Field(alias="searchLocationValue", ge=0, le=3)


class ProductsByIdsBody(_Body):
    channel_id: int = Field(alias="channelId")
    product_ids: list[int] = Field(alias="productIds")


_ERRORS: dict[int, type[web.HTTPException]] = {
    400: web.HTTPBadRequest,
    401: web.HTTPUnauthorized,
    404: web.HTTPNotFound,
}


def commerce_error(status: int, resource_id: str, message: str, request: web.Request) -> web.HTTPException:
    """An error answer in the shape Retail Server serialises a CommerceException."""
    body = {
        "ErrorResourceId": _RUNTIME + resource_id,
        "LocalizedMessage": message,
        "CorrelationId": request_id(request),
    }
    return _ERRORS[status](text=json.dumps(body), content_type="application/json")


class RetailServerStandIn:
    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox

    def add_routes(self, app: web.Application) -> None:
        routes = (
            ("POST", "/Carts/Search", self.search_carts),
            ("POST", "/Customers/GetByAccountNumbers", self.customers_by_account_numbers),
            ("POST", "/Products/GetByIds", self.products_by_ids),
            (
                "GET",
                r"/Products({product_id:\d+})/GetMediaLocations({arguments:[^)]*})",
                self.media_locations,
            ),
            ("POST", "/OrgUnits/GetOrgUnitConfiguration", self.org_unit_configuration),
        )
        for method, path, handler in routes:
            app.router.add_route(method, ROOT + path, handler)

    def add_fallback(self, app: web.Application) -> None:
        """Answer unknown Retail Server paths like Retail Server; added last so it never shadows."""
        app.router.add_route("*", ROOT + "/{tail:.*}", self.not_found)

    # ----- the checks every call passes

    def _guard(self, request: web.Request) -> Channel:
        sandbox = self.sandbox
        try:
            claims = sandbox.authenticate(request, audience=sandbox.retail_server_audience, scheme="id_token")
        except TokenRejectedError as exc:
            raise commerce_error(
                401, "AuthenticationFailed", f"Authentication failed: {exc}.", request
            ) from None
        if claims.get("appid") not in sandbox.relying_parties:
            raise commerce_error(
                401,
                "UnknownRelyingParty",
                f"The application '{claims.get('appid')}' is not registered as a relying party of the "
                "identity provider in Commerce shared parameters.",
                request,
            )
        version = request.query.get("api-version")
        if version != API_VERSION:
            raise commerce_error(
                400,
                "UnsupportedApiVersion",
                f"The api-version query parameter is {'missing' if version is None else repr(version)}; "
                f"this Retail Server supports {API_VERSION}.",
                request,
            )
        oun = request.headers.get("OUN")
        if not oun:
            raise commerce_error(
                400,
                "OperatingUnitNumberMissing",
                "The OUN header with the channel's operating unit number is required.",
                request,
            )
        channel = sandbox.data.channel_by_oun(oun)
        if channel is None:
            raise commerce_error(
                404, "ChannelNotFound", f"No channel has the operating unit number '{oun}'.", request
            )
        return channel

    async def _body(self, request: web.Request, model: type[BodyT]) -> BodyT:
        raw = await request.read()
        try:
            return model.model_validate_json(raw or b"null")
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(part) for part in error['loc']) or 'body'}: {error['msg']}"
                for error in exc.errors(include_url=False)[:5]
            )
            raise commerce_error(
                400, "InvalidRequest", f"The request body is not valid: {problems}.", request
            ) from None

    def _collection(self, request: web.Request, entity: str, items: Sequence[dict[str, Any]]) -> web.Response:
        skip = self._query_int(request, "$skip", 0)
        top = min(self._query_int(request, "$top", self.sandbox.max_page_size), self.sandbox.max_page_size)
        body = {
            "@odata.context": f"{self.sandbox.retail_server_url}/Commerce/{_METADATA.format(entity)}",
            "value": list(items[skip : skip + top]),
        }
        return web.json_response(body)

    @staticmethod
    def _query_int(request: web.Request, name: str, default: int) -> int:
        raw = request.query.get(name)
        if raw is None:
            return default
        if not raw.isdigit():
            raise commerce_error(
                400, "InvalidQueryOption", f"The query option {name} must be a non-negative integer.", request
            )
        return int(raw)

    # ----- actions and functions

    async def search_carts(self, request: web.Request) -> web.Response:
        channel = self._guard(request)
        criteria = (await self._body(request, CartSearchBody)).criteria
        data = self.sandbox.data
        # A search by cart id (notify's re-read) looks the one cart up instead of scanning them all.
        scanned = (
            data.carts.values()
            if criteria.cart_id is None
            else [c for c in (data.carts.get(criteria.cart_id),) if c is not None]
        )
        carts = [cart for cart in scanned if cart.channel_id == channel.channel_id and criteria.admits(cart)]
        order = self._order_by(request)
        for column, descending in reversed(order):
            carts.sort(key=_sort_key(column), reverse=descending)
        skip = self._query_int(request, "$skip", 0)
        top = min(self._query_int(request, "$top", self.sandbox.max_page_size), self.sandbox.max_page_size)
        bulk = data.bulk.get(channel.oun)
        if bulk is None:
            chosen = carts[skip : skip + top]
        elif order == [("ModifiedDateTime", False), ("Id", False)]:
            # Bulk carts (the benchmarks' volumes) are merged in by index arithmetic: only the page
            # is generated, so a search over 100,000 of them costs what a page costs.
            indexes = _bulk_candidates(bulk, criteria)
            chosen = [
                item if isinstance(item, Cart) else data.bulk_cart(channel.oun, item)
                for item in merged_page(
                    carts, indexes, lambda i: (bulk.ticks_of(i), bulk.cart_id(i)), skip, top
                )
            ]
        else:
            every = [data.bulk_cart(channel.oun, i) for i in _bulk_candidates(bulk, criteria)]
            carts = [cart for cart in [*carts, *every] if criteria.admits(cart)]
            for column, descending in reversed(order):
                carts.sort(key=_sort_key(column), reverse=descending)
            chosen = carts[skip : skip + top]
        if criteria.last_modified_from is not None or criteria.last_modified_to is not None:
            data.served.setdefault(channel.oun, set()).update(cart.id for cart in chosen)
        # Only the page is rendered: a search over the whole table stays cheap.
        page = [cart.wire() for cart in chosen]
        return web.json_response(
            {
                "@odata.context": f"{self.sandbox.retail_server_url}/Commerce/{_METADATA.format('Cart')}",
                "value": page,
            }
        )

    def _order_by(self, request: web.Request) -> list[tuple[str, bool]]:
        raw = request.query.get("$orderby", "")
        columns: list[tuple[str, bool]] = []
        for part in filter(None, (p.strip() for p in raw.split(","))):
            name, _, direction = part.partition(" ")
            direction = direction.strip().lower() or "asc"
            if name not in _ORDERABLE or direction not in {"asc", "desc"}:
                raise commerce_error(
                    400,
                    "InvalidQueryOption",
                    f"Cannot order carts by '{part}'; use {', '.join(sorted(_ORDERABLE))} with asc or desc.",
                    request,
                )
            columns.append((name, direction == "desc"))
        # Ties always fall back to the key, so paging with $skip is stable.
        if not any(name == "Id" for name, _ in columns):
            columns.append(("Id", False))
        return columns

    async def customers_by_account_numbers(self, request: web.Request) -> web.Response:
        self._guard(request)
        body = await self._body(request, CustomersByAccountNumbersBody)
        customers = self.sandbox.data.customers
        wanted = dict.fromkeys(body.account_numbers)
        found = [customers[number].wire() for number in wanted if number in customers]
        return self._collection(request, "Customer", found)

    async def products_by_ids(self, request: web.Request) -> web.Response:
        self._guard(request)
        body = await self._body(request, ProductsByIdsBody)
        channel = self._known_channel(request, body.channel_id)
        products = self.sandbox.data.products
        wanted = dict.fromkeys(body.product_ids)
        found = [products[pid].wire(channel) for pid in wanted if pid in products]
        return self._collection(request, "SimpleProduct", found)

    async def media_locations(self, request: web.Request) -> web.Response:
        self._guard(request)
        arguments = _function_arguments(request, request.match_info["arguments"], {"channelId", "catalogId"})
        self._known_channel(request, arguments["channelId"])
        product = self.sandbox.data.products.get(int(request.match_info["product_id"]))
        if product is not None and not product.media_published:
            raise commerce_error(
                404, "ResourceNotFound", "The product's media locations are not published.", request
            )
        media = [item.wire() for item in product.media] if product is not None else []
        return self._collection(request, "MediaLocation", media)

    async def org_unit_configuration(self, request: web.Request) -> web.Response:
        channel = self._guard(request)
        raw = (await request.read()).strip()
        if raw:
            try:
                parameters = json.loads(raw)
            except ValueError:
                parameters = None
            if parameters != {}:
                raise commerce_error(
                    400, "InvalidRequest", "GetOrgUnitConfiguration takes no parameters.", request
                )
        return web.json_response(
            {
                "@odata.context": f"{self.sandbox.retail_server_url}/Commerce/$metadata"
                "#Microsoft.Dynamics.Commerce.Runtime.DataModel.ChannelConfiguration",
                **channel.configuration_wire(),
            }
        )

    async def not_found(self, request: web.Request) -> web.Response:
        self._guard(request)
        raise commerce_error(
            404, "ResourceNotFound", f"No resource matches the request URI '{request.path}'.", request
        )

    def _known_channel(self, request: web.Request, channel_id: int) -> Channel:
        channel = self.sandbox.data.channel_by_id(channel_id)
        if channel is None:
            raise commerce_error(404, "ChannelNotFound", f"No channel has the id {channel_id}.", request)
        return channel


def _bulk_candidates(bulk: BulkCarts, criteria: CartSearchCriteria) -> Sequence[int]:
    """The bulk carts' indexes the criteria may admit, in date order (all are named shopping carts)."""
    if criteria.suspended_only or criteria.cart_type_value not in (None, CART_SHOPPING):
        return ()
    if criteria.cart_id is not None:
        index = bulk.index_of(criteria.cart_id)
        candidates: Sequence[int] = () if index is None else (index,)
    elif criteria.customer_account_number is not None:
        customer = bulk.customer_of(criteria.customer_account_number)
        candidates = () if customer is None else bulk.carts_of(customer)
    else:
        return bulk.in_range(criteria.last_modified_from, criteria.last_modified_to)
    window = bulk.in_range(criteria.last_modified_from, criteria.last_modified_to)
    return [i for i in candidates if i in window]


def _sort_key(column: str) -> Callable[[Cart], Any]:
    if column == "ModifiedDateTime":
        return lambda cart: cart.modified_ticks
    if column == "BeginDateTime":
        return lambda cart: ticks(cart.begin_date_time)
    return lambda cart: cart.id


_ARGUMENT = re.compile(r"^\s*(\w+)\s*=\s*(-?\d+)\s*$")


def _function_arguments(request: web.Request, raw: str, required: set[str]) -> dict[str, int]:
    """Inline OData function parameters such as ``channelId=5637144592,catalogId=0``."""
    arguments: dict[str, int] = {}
    for part in filter(None, raw.split(",")):
        match = _ARGUMENT.match(part)
        if match is None:
            raise commerce_error(
                400, "InvalidRequest", f"Cannot read the function parameter '{part}'.", request
            )
        arguments[match.group(1)] = int(match.group(2))
    missing = required - arguments.keys()
    unknown = arguments.keys() - required
    if missing or unknown:
        raise commerce_error(
            400,
            "InvalidRequest",
            f"The function takes {', '.join(sorted(required))}; missing {sorted(missing)}, unknown "
            f"{sorted(unknown)}.",
            request,
        )
    return arguments
