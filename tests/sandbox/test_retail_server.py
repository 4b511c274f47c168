"""The Retail Server stand-in: what it demands of a caller, and what each API answers."""

from __future__ import annotations

import argparse
import time
from datetime import datetime, timedelta
from typing import Any

import aiohttp
import pytest

from sandbox.data import format_datetime
from sandbox.server import Sandbox
from tests.sandbox.conftest import NOW, RetailServer, app_token

CHANNEL_128 = 5637144592
CHANNEL_067 = 5637144593


def assert_commerce_error(answer: Any, status: int) -> str:
    assert answer.status == status, answer.body
    assert set(answer.body) == {"ErrorResourceId", "LocalizedMessage", "CorrelationId"}
    assert answer.body["CorrelationId"] == answer.headers["request-id"]
    message: str = answer.body["LocalizedMessage"]
    return message


def when(value: str) -> datetime:
    return datetime.fromisoformat(value)


# ----- what every call must carry


async def test_bearer_scheme_is_refused(retail: RetailServer) -> None:
    answer = await retail.call(
        "POST", "OrgUnits/GetOrgUnitConfiguration", authorization=f"Bearer {retail.token}"
    )
    assert "id_token" in assert_commerce_error(answer, 401)


async def test_missing_authorization_is_refused(retail: RetailServer) -> None:
    answer = await retail.call("POST", "OrgUnits/GetOrgUnitConfiguration", authorization="")
    assert_commerce_error(answer, 401)


@pytest.mark.parametrize("version", [None, "7.2", "1.0"])
async def test_api_version_must_be_7_3(retail: RetailServer, version: str | None) -> None:
    answer = await retail.call("POST", "OrgUnits/GetOrgUnitConfiguration", api_version=version)
    assert "api-version" in assert_commerce_error(answer, 400)


async def test_oun_header_is_required(retail: RetailServer) -> None:
    answer = await retail.call("POST", "OrgUnits/GetOrgUnitConfiguration", oun=None)
    assert "OUN" in assert_commerce_error(answer, 400)


@pytest.mark.parametrize("oun", ["67", "0128", "999"])
async def test_unknown_oun_is_refused_leading_zeros_count(retail: RetailServer, oun: str) -> None:
    answer = await retail.call("POST", "OrgUnits/GetOrgUnitConfiguration", oun=oun)
    assert_commerce_error(answer, 404)


async def test_app_off_the_relying_party_list_is_refused(
    retail: RetailServer, sandbox_server: Sandbox, http: aiohttp.ClientSession
) -> None:
    sandbox_server.register_app("11111111-2222-3333-4444-555555555555", "other", relying_party=False)
    token = await app_token(
        http, sandbox_server, client_id="11111111-2222-3333-4444-555555555555", secret="other"
    )
    answer = await retail.call("POST", "OrgUnits/GetOrgUnitConfiguration", authorization=f"id_token {token}")
    assert "relying party" in assert_commerce_error(answer, 401)
    sandbox_server.register_app("11111111-2222-3333-4444-555555555555", "other", relying_party=True)
    answer = await retail.call("POST", "OrgUnits/GetOrgUnitConfiguration", authorization=f"id_token {token}")
    assert answer.status == 200


async def test_wrong_audience_expired_and_forged_tokens_are_refused(
    retail: RetailServer, sandbox_server: Sandbox, http: aiohttp.ClientSession
) -> None:
    wrong_audience = await app_token(http, sandbox_server, scope="api://some-other-api/.default")
    app = sandbox_server.apps[sandbox_server.client_id]
    expired = sandbox_server.tokens.issue(app, "https://commerce.dynamics.com", now=time.time() - 7200)
    header, payload, signature = retail.token.split(".")
    forged = f"{header}.{payload}.{signature[::-1]}"
    for token in (wrong_audience, expired, forged, "not-a-jwt"):
        answer = await retail.call(
            "POST", "OrgUnits/GetOrgUnitConfiguration", authorization=f"id_token {token}"
        )
        assert_commerce_error(answer, 401)


async def test_every_answer_has_a_request_id(retail: RetailServer) -> None:
    ok = await retail.call("POST", "OrgUnits/GetOrgUnitConfiguration")
    unknown = await retail.call("GET", "NoSuchSet")
    assert ok.headers["request-id"] != unknown.headers["request-id"]
    assert_commerce_error(unknown, 404)


# ----- OrgUnits/GetOrgUnitConfiguration


async def test_channel_configuration_per_oun(retail: RetailServer) -> None:
    usd = await retail.call("POST", "OrgUnits/GetOrgUnitConfiguration")
    eur = await retail.call("POST", "OrgUnits/GetOrgUnitConfiguration", oun="067", json={})
    assert usd.status == eur.status == 200
    assert (usd.body["RecordId"], usd.body["Currency"], usd.body["DefaultLanguageId"]) == (
        CHANNEL_128,
        "USD",
        "en-us",
    )
    assert (eur.body["RecordId"], eur.body["Currency"], eur.body["DefaultLanguageId"]) == (
        CHANNEL_067,
        "EUR",
        "de-de",
    )
    assert {
        "TimeZoneInfoId",
        "ChannelNaturalId",
        "CountryRegionId",
        "CompanyCurrency",
        "PriceIncludesSalesTax",
    } <= set(usd.body)


async def test_channel_configuration_takes_no_parameters(retail: RetailServer) -> None:
    answer = await retail.call("POST", "OrgUnits/GetOrgUnitConfiguration", json={"channelId": CHANNEL_128})
    assert_commerce_error(answer, 400)


# ----- Carts/Search


async def search_all(
    retail: RetailServer, criteria: dict[str, Any], page: int, oun: str = "128"
) -> list[dict[str, Any]]:
    carts: list[dict[str, Any]] = []
    while True:
        answer = await retail.search(
            criteria,
            oun=oun,
            query={"$top": str(page), "$skip": str(len(carts)), "$orderby": "ModifiedDateTime,Id"},
        )
        assert answer.status == 200, answer.body
        carts.extend(answer.body["value"])
        if len(answer.body["value"]) < page:
            return carts


async def test_search_filters_channel_type_and_anonymous_and_orders_stably(
    retail: RetailServer, sandbox_server: Sandbox
) -> None:
    carts = await search_all(retail, {"CartTypeValue": 1, "IncludeAnonymous": False}, page=1000)
    expected = [
        c for c in sandbox_server.data.carts_in("128") if c.cart_type_value == 1 and c.customer_id != ""
    ]
    assert len(carts) == len(expected)
    assert {c["ChannelId"] for c in carts} == {CHANNEL_128}
    assert {c["CartTypeValue"] for c in carts} == {1}
    assert all(c["CustomerId"] for c in carts)
    keys = [(when(c["ModifiedDateTime"]), c["Id"]) for c in carts]
    assert keys == sorted(keys)


async def test_search_includes_anonymous_and_other_types_when_asked(
    retail: RetailServer, sandbox_server: Sandbox
) -> None:
    carts = await search_all(retail, {"IncludeAnonymous": True}, page=1000)
    assert len(carts) == len(sandbox_server.data.carts_in("128"))
    assert any(c["CustomerId"] == "" for c in carts)
    assert {c["CartTypeValue"] for c in carts} >= {1, 2}


async def test_search_window_is_inclusive_at_both_ends(retail: RetailServer, sandbox_server: Sandbox) -> None:
    block = format_datetime(sandbox_server.data.same_instant_block())
    carts = await search_all(
        retail,
        {"CartTypeValue": 1, "LastModifiedDateTimeFrom": block, "LastModifiedDateTimeTo": block},
        page=1000,
    )
    assert len(carts) >= 300
    assert {c["ModifiedDateTime"] for c in carts} == {block}
    later = format_datetime(sandbox_server.data.same_instant_block() + timedelta(milliseconds=1))
    after = await search_all(
        retail, {"LastModifiedDateTimeFrom": later, "LastModifiedDateTimeTo": later}, page=1000
    )
    assert all(c["ModifiedDateTime"] != block for c in after)


async def test_search_compares_at_full_precision(retail: RetailServer, sandbox_server: Sandbox) -> None:
    """Like Retail Server, the bounds are compared in 100-ns ticks, not cut to the millisecond."""
    at = NOW - timedelta(minutes=3, microseconds=-123_456)
    cart = sandbox_server.data.add_cart(customer_id="004001", modified=at, modified_100ns=5)
    stamp = "2026-03-02T11:57:00.1234565Z"
    assert cart.wire()["ModifiedDateTime"] == stamp

    async def found(start: str, end: str) -> bool:
        carts = await search_all(
            retail, {"LastModifiedDateTimeFrom": start, "LastModifiedDateTimeTo": end}, page=1000
        )
        return cart.id in {c["Id"] for c in carts}

    assert await found(stamp, stamp)
    assert await found("2026-03-02T11:57:00.123456Z", "2026-03-02T11:57:00.123457Z")
    assert not await found("2026-03-02T11:57:00.1234566Z", "2026-03-02T11:58:00Z")
    assert not await found("2026-03-02T11:57:00.123Z", "2026-03-02T11:57:00.123456Z")


async def test_search_orders_by_the_seventh_digit(retail: RetailServer, sandbox_server: Sandbox) -> None:
    at = NOW - timedelta(minutes=3)
    later = sandbox_server.data.add_cart(customer_id="004001", modified=at, modified_100ns=7, cart_id="A")
    earlier = sandbox_server.data.add_cart(customer_id="004002", modified=at, modified_100ns=2, cart_id="B")
    stamp = format_datetime(at)
    carts = await search_all(
        retail, {"LastModifiedDateTimeFrom": stamp, "LastModifiedDateTimeTo": format_datetime(NOW)}, page=1000
    )
    assert [c["Id"] for c in carts if c["Id"] in {"A", "B"}] == [earlier.id, later.id]


async def test_search_window_accepts_offsets_other_than_utc(retail: RetailServer) -> None:
    start = NOW - timedelta(hours=6)
    utc = await search_all(
        retail,
        {"LastModifiedDateTimeFrom": format_datetime(start), "LastModifiedDateTimeTo": format_datetime(NOW)},
        page=1000,
    )
    shifted = await search_all(
        retail,
        {
            "LastModifiedDateTimeFrom": "2026-03-02T08:00:00+02:00",
            "LastModifiedDateTimeTo": "2026-03-02T06:00:00-06:00",
        },
        page=1000,
    )
    assert utc and [c["Id"] for c in utc] == [c["Id"] for c in shifted]


async def test_skip_and_top_page_through_the_same_order(retail: RetailServer) -> None:
    window = {
        "CartTypeValue": 1,
        "LastModifiedDateTimeFrom": format_datetime(NOW - timedelta(days=2)),
        "LastModifiedDateTimeTo": format_datetime(NOW),
    }
    whole = await search_all(retail, window, page=1000)
    paged = await search_all(retail, window, page=7)
    assert [c["Id"] for c in paged] == [c["Id"] for c in whole]
    assert len(whole) > 300


async def test_top_is_clamped_to_the_maximum_page_size() -> None:
    async with Sandbox(now=NOW, max_page_size=50) as sandbox:
        connector = aiohttp.TCPConnector(ssl=sandbox.client_ssl_context())
        async with aiohttp.ClientSession(connector=connector) as http:
            retail = RetailServer(http, sandbox, await app_token(http, sandbox))
            big = await retail.search({}, query={"$top": "1000"})
            default = await retail.search({})
    assert len(big.body["value"]) == 50
    assert len(default.body["value"]) == 50


async def test_orderby_descending_and_unknown_columns(retail: RetailServer) -> None:
    answer = await retail.search({}, query={"$top": "20", "$orderby": "ModifiedDateTime desc,Id"})
    stamps = [when(c["ModifiedDateTime"]) for c in answer.body["value"]]
    assert stamps == sorted(stamps, reverse=True)
    bad = await retail.search({}, query={"$orderby": "TotalAmount"})
    assert_commerce_error(bad, 400)
    bad_top = await retail.search({}, query={"$top": "-1"})
    assert_commerce_error(bad_top, 400)


@pytest.mark.parametrize(
    "body",
    [
        {"CartTypeValue": 1},  # not wrapped in cartSearchCriteria
        {"cartSearchCriteria": {"CartTypeValue": "1"}},
        {"cartSearchCriteria": {"LastModifiedDateTimeFrom": "2026-03-01T10:00:00"}},  # no offset
        {"cartSearchCriteria": {"LastModifiedDateTimeFrom": "2026-03-01T10:00:00.12345678Z"}},  # > 7 digits
        {"cartSearchCriteria": {"LastModifiedDateTimeFrom": 1772359200}},  # not a literal
        {"cartSearchCriteria": {"cartTypeValue": 1}},  # camelCase property
    ],
)
async def test_search_refuses_malformed_criteria(retail: RetailServer, body: dict[str, Any]) -> None:
    answer = await retail.call("POST", "Carts/Search", json=body)
    assert_commerce_error(answer, 400)


async def test_search_by_cart_id_and_customer(retail: RetailServer, sandbox_server: Sandbox) -> None:
    cart = next(c for c in sandbox_server.data.carts_in("128") if c.customer_id and c.lines)
    by_id = await retail.search({"CartId": cart.id})
    assert [c["Id"] for c in by_id.body["value"]] == [cart.id]
    by_customer = await search_all(retail, {"CustomerAccountNumber": cart.customer_id}, page=1000)
    assert cart.id in {c["Id"] for c in by_customer}
    assert {c["CustomerId"] for c in by_customer} == {cart.customer_id}
    other_channel = await retail.search({"CartId": cart.id}, oun="067")
    assert other_channel.body["value"] == []


async def test_cart_wire_shape(retail: RetailServer, sandbox_server: Sandbox) -> None:
    cart = next(c for c in sandbox_server.data.carts_in("128") if len(c.active_lines) >= 2 and c.customer_id)
    (wire,) = (await retail.search({"CartId": cart.id})).body["value"]
    assert {
        "Id", "CustomerId", "ChannelId", "CartTypeValue", "CartStatusValue", "Version", "ModifiedDateTime",
        "BeginDateTime", "SubtotalAmount", "TotalAmount", "TaxAmount", "DiscountAmount", "TotalItems",
        "CartLines", "ExtensionProperties", "Coupons",
    } <= set(wire)  # fmt: skip
    line = wire["CartLines"][0]
    assert {
        "LineId", "ProductId", "ItemId", "Description", "Quantity", "Price", "ExtendedPrice",
        "NetAmountWithoutTax", "TotalAmount", "DiscountAmount", "IsVoided", "IsGiftCardLine", "LineNumber",
    } <= set(line)  # fmt: skip
    assert wire["TotalAmount"] == pytest.approx(
        sum(li["TotalAmount"] for li in wire["CartLines"] if not li["IsVoided"])
    )
    assert wire["ModifiedDateTime"].endswith("Z")


async def test_changes_through_the_data_helpers_show_on_the_wire(
    retail: RetailServer, sandbox_server: Sandbox
) -> None:
    data = sandbox_server.data
    touched, voided, bought = [c for c in data.carts_in("128") if c.customer_id][:3]
    version = touched.version
    data.touch_cart(touched.id, NOW - timedelta(minutes=5))
    data.void_cart(voided.id)
    order = data.checkout_cart(bought.id)
    added = data.add_cart(customer_id="004001", modified=NOW - timedelta(minutes=2), lines=[(68719490005, 2)])
    window = {
        "IncludeAnonymous": True,
        "LastModifiedDateTimeFrom": format_datetime(NOW - timedelta(minutes=10)),
    }
    recent = {c["Id"]: c for c in (await retail.search(window)).body["value"]}
    assert recent[touched.id]["Version"] == version + 1
    assert recent[touched.id]["ModifiedDateTime"] == format_datetime(NOW - timedelta(minutes=5))
    assert recent[added.id]["CartLines"][0]["Quantity"] == 2
    (voided_wire,) = (await retail.search({"CartId": voided.id})).body["value"]
    assert voided_wire["CartStatusValue"] == 3
    assert (await retail.search({"CartId": bought.id})).body["value"] == []
    assert order.cart_id == bought.id and data.orders == [order]


# ----- Customers, products, media


async def test_customers_by_account_numbers(retail: RetailServer, sandbox_server: Sandbox) -> None:
    known = list(sandbox_server.data.customers)[:3]
    answer = await retail.call(
        "POST",
        "Customers/GetByAccountNumbers",
        json={"accountNumbers": [*known, "NOPE-1"], "searchLocationValue": 1},
    )
    assert answer.status == 200
    customers = answer.body["value"]
    assert [c["AccountNumber"] for c in customers] == known
    fields = {
        "AccountNumber", "RecordId", "FirstName", "LastName", "Name", "Email", "Phone", "Language", "CurrencyCode",
        "CustomerTypeValue", "OptOutPersonalization", "OptOutWebActivityTracking", "Contacts", "Blocked",
    }  # fmt: skip
    assert all(fields <= set(c) for c in customers)
    for customer in customers:
        emails = [c for c in customer["Contacts"] if c["AddressTypeValue"] == 2]
        assert [c["Value"] for c in emails] == ([customer["Email"]] if customer["Email"] else [])


async def test_customers_need_the_search_location(retail: RetailServer) -> None:
    answer = await retail.call("POST", "Customers/GetByAccountNumbers", json={"accountNumbers": ["004001"]})
    assert_commerce_error(answer, 400)


async def test_products_by_ids_priced_per_channel(retail: RetailServer, sandbox_server: Sandbox) -> None:
    ids = list(sandbox_server.data.products)[:4]
    body = {"channelId": CHANNEL_128, "productIds": [*ids, 1]}
    usd = (await retail.call("POST", "Products/GetByIds", json=body)).body["value"]
    eur = (
        await retail.call("POST", "Products/GetByIds", oun="067", json={**body, "channelId": CHANNEL_067})
    ).body["value"]
    assert [p["RecordId"] for p in usd] == ids
    assert usd[0]["Name"] == "Black Blazer" and usd[0]["Price"] == 129.99
    assert eur[0]["Price"] != usd[0]["Price"]
    fields = {
        "RecordId", "ItemId", "Name", "Description", "ProductTypeValue", "BasePrice", "Price", "AdjustedPrice",
        "MasterProductId", "PrimaryImageUrl",
    }  # fmt: skip
    assert all(fields <= set(p) for p in usd)
    assert usd[0]["PrimaryImageUrl"].startswith("Products/")


async def test_products_need_a_known_channel(retail: RetailServer) -> None:
    answer = await retail.call("POST", "Products/GetByIds", json={"channelId": 42, "productIds": [1]})
    assert_commerce_error(answer, 404)
    answer = await retail.call("POST", "Products/GetByIds", json={"productIds": [1]})
    assert_commerce_error(answer, 400)


async def test_media_locations(retail: RetailServer, sandbox_server: Sandbox) -> None:
    products = sandbox_server.data.products.values()
    with_alt = next(p for p in products if p.media and p.media[0].alt_text)
    without_alt = next(p for p in products if p.media and p.media[0].alt_text is None)
    without_media = next(p for p in products if not p.media)

    async def media(product_id: int) -> list[dict[str, Any]]:
        path = f"Products({product_id})/GetMediaLocations(channelId={CHANNEL_128},catalogId=0)"
        answer = await retail.call("GET", path)
        assert answer.status == 200, answer.body
        value: list[dict[str, Any]] = answer.body["value"]
        return value

    first = (await media(with_alt.record_id))[0]
    assert set(first) == {"Uri", "AltText", "IsDefault", "IsSelfHosted", "Priority"}
    assert first["Uri"] == with_alt.primary_image_url and first["AltText"]
    assert (await media(without_alt.record_id))[0]["AltText"] is None
    assert await media(without_media.record_id) == []
    missing = await retail.call(
        "GET", f"Products({with_alt.record_id})/GetMediaLocations(channelId={CHANNEL_128})"
    )
    assert_commerce_error(missing, 400)


async def test_an_unpublished_product_is_listed_but_its_media_answer_404(
    retail: RetailServer, sandbox_server: Sandbox
) -> None:
    [product] = [p for p in sandbox_server.data.products.values() if not p.media_published]
    listed = await retail.call(
        "POST", "Products/GetByIds", json={"channelId": CHANNEL_128, "productIds": [product.record_id]}
    )
    [wire] = listed.body["value"]
    assert (wire["RecordId"], wire["PrimaryImageUrl"]) == (product.record_id, None)
    media = await retail.call(
        "GET", f"Products({product.record_id})/GetMediaLocations(channelId={CHANNEL_128},catalogId=0)"
    )
    assert_commerce_error(media, 404)


@pytest.mark.parametrize(("kind", "status"), [("500", 500), ("404", 404), ("429", 429)])
async def test_the_media_fault_switch_fails_every_media_call_and_nothing_else(kind: str, status: int) -> None:
    async with Sandbox(seed=42, now=NOW, media_fault=kind) as sandbox:
        connector = aiohttp.TCPConnector(ssl=sandbox.client_ssl_context())
        async with aiohttp.ClientSession(connector=connector) as http:
            retail = RetailServer(http, sandbox, await app_token(http, sandbox))
            product = next(p for p in sandbox.data.products.values() if p.media)
            media = await retail.call(
                "GET", f"Products({product.record_id})/GetMediaLocations(channelId={CHANNEL_128},catalogId=0)"
            )
            listed = await retail.call(
                "POST",
                "Products/GetByIds",
                json={"channelId": CHANNEL_128, "productIds": [product.record_id]},
            )
    assert media.status == status
    assert listed.status == 200 and len(listed.body["value"]) == 1


def test_media_fault_kinds_are_checked_for_the_command_line() -> None:
    from sandbox.__main__ import media_fault_kind
    from sandbox.retail_server import check_media_fault

    assert [check_media_fault(kind) for kind in ("timeout", "reset", "malformed", "503")] == [
        "timeout",
        "reset",
        "malformed",
        "503",
    ]
    for bad in ("200", "slow", ""):
        with pytest.raises(ValueError, match="media fault"):
            check_media_fault(bad)
    with pytest.raises(argparse.ArgumentTypeError):
        media_fault_kind("600")
