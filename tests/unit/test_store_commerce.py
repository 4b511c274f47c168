from __future__ import annotations

import base64
import json
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from pydantic import ValidationError

from shared.store_commerce import (
    CREATE_TRANSACTION,
    MAX_URL_LENGTH,
    RECALL_ORDER,
    CreateTransactionParams,
    DeepLinkError,
    DeepLinkItem,
    DeepLinkTooLongError,
    InvalidActionNameError,
    InvalidDeepLinkError,
    PricedItem,
    RecallOrderParams,
    build_create_transaction_link,
    cloud_pos_link,
    decode_param,
    parse_deep_link,
    store_commerce_link,
)

# The complete example URL of the Store Commerce documentation (reference/retail-server.md, 7).
DOC_URL = (
    "ms-d365sc://executeAction?actionName=D365.CreateTransaction&param=ewogICAgImN1c3RvbWVySWQiOiAiMDA0"
    "MDAzIiwKICAgICJpdGVtcyI6IFsKICAgICAgICB7CiAgICAgICAgICAgICJwcm9kdWN0SWQiOiAyMjU2NTQyMTk2MywKICAgICAg"
    "ICAgICAgInF1YW50aXR5IjogMgogICAgICAgIH0sCiAgICAgICAgewogICAgICAgICAgICAicHJvZHVjdElkIjogMjI1NjU0MjE5"
    "NjQKICAgICAgICB9CiAgICBdLAogICAgIm1vZGUiOiAiVm9pZEFuZENyZWF0ZSIKfQ=="
)
DOC_JSON: dict[str, Any] = {
    "customerId": "004003",
    "items": [{"productId": 22565421963, "quantity": 2}, {"productId": 22565421964}],
    "mode": "VoidAndCreate",
}
CPOS = "https://pos.contoso.example/cpos"


def _param_of(url: str) -> str:
    return parse_qs(urlsplit(url).query)["param"][0]


def test_documentation_example_decodes_to_its_json() -> None:
    link = parse_deep_link(DOC_URL)
    assert link.action_name == CREATE_TRANSACTION
    assert link.form == "storeCommerce"
    assert link.params == DOC_JSON
    items = CreateTransactionParams.model_validate(link.params).items
    assert items is not None and items[1].quantity is None


def test_documentation_example_params_build_a_link_that_decodes_the_same() -> None:
    url = store_commerce_link(CREATE_TRANSACTION, DOC_JSON)
    assert url.startswith("ms-d365sc://executeAction?actionName=D365.CreateTransaction&param=")
    # Compact JSON, standard Base64.
    raw = base64.b64decode(_param_of(url), validate=True).decode("utf-8")
    assert json.loads(raw) == DOC_JSON
    assert " " not in raw
    assert parse_deep_link(url).params == DOC_JSON


def test_typed_params_serialise_with_wire_names_and_integral_quantities() -> None:
    params = CreateTransactionParams(
        customer_id="004003",
        items=[
            DeepLinkItem(product_id=22565421963, quantity=Decimal("2")),
            DeepLinkItem(product_id=22565421964),
            DeepLinkItem(product_id=5, quantity=Decimal("1.5")),
        ],
        mode="VoidAndCreate",
    )
    decoded = parse_deep_link(store_commerce_link(CREATE_TRANSACTION, params)).params
    assert decoded == {
        "customerId": "004003",
        "items": [
            {"productId": 22565421963, "quantity": 2},
            {"productId": 22565421964},
            {"productId": 5, "quantity": 1.5},
        ],
        "mode": "VoidAndCreate",
    }


def test_recall_order_round_trip_in_both_forms() -> None:
    params = RecallOrderParams(sales_id="SO-12345")
    sc = store_commerce_link(RECALL_ORDER, params)
    cpos = cloud_pos_link(CPOS + "/", RECALL_ORDER, {"salesId": "SO-12345"})
    assert cpos.startswith(f"{CPOS}/POS?actionName=D365.RecallOrder&param=")
    for url in (sc, cpos):
        link = parse_deep_link(url)
        assert (link.action_name, link.params) == (RECALL_ORDER, {"salesId": "SO-12345"})
    parsed_cpos = parse_deep_link(cpos)
    assert (parsed_cpos.form, parsed_cpos.cloud_pos_url) == ("cloudPos", CPOS)


def _params_whose_base64_has(*chars: str) -> dict[str, Any]:
    # In standard Base64 of ASCII text, '+' and '/' come from '>' and '?' as the third byte of a
    # group of three; three of each in a row guarantee both, the padding depends on the length.
    for n in range(30):
        params = {"note": "x" * n + ">>>???"}
        encoded = base64.b64encode(json.dumps(params, separators=(",", ":")).encode()).decode()
        if all(c in encoded for c in chars):
            return params
    raise AssertionError("no sample found")


def test_plus_slash_and_padding_survive_url_parsing() -> None:
    params = _params_whose_base64_has("+", "/", "=")
    url = store_commerce_link("Contoso.PosExtensions.LogInventoryCheck", params)
    query = urlsplit(url).query
    assert "+" not in query and "%2B" in query
    # parse_qs decodes form-style ('+' -> space): the value still comes back exact.
    param = parse_qs(query)["param"][0]
    assert "+" in param and "/" in param and param.endswith("=")
    assert decode_param(param) == params
    assert parse_deep_link(url).params == params


def test_a_link_written_with_a_raw_plus_is_still_read() -> None:
    params = _params_whose_base64_has("+")
    encoded = base64.b64encode(json.dumps(params, separators=(",", ":")).encode()).decode()
    assert "+" in encoded
    url = f"ms-d365sc://executeAction?actionName=Contoso.Pos.Do&param={encoded}"
    assert parse_deep_link(url).params == params


def test_non_ascii_text_is_escaped_json() -> None:
    url = store_commerce_link("Contoso.Pos.Note", {"text": "Grüße ☃"})
    raw = base64.b64decode(_param_of(url)).decode("ascii")
    assert "\\u00fc" in raw
    assert parse_deep_link(url).params == {"text": "Grüße ☃"}


def test_extension_action_takes_any_json_object() -> None:
    params = {"sku": "A-1", "count": 3, "nested": {"ok": True, "list": [1, None, "x"]}}
    link = parse_deep_link(cloud_pos_link(CPOS, "Contoso.PosExtensions.LogInventoryCheck", params))
    assert link.action_name == "Contoso.PosExtensions.LogInventoryCheck"
    assert link.params == params


@pytest.mark.parametrize(
    "name",
    [
        "D365.VoidEverything",
        "d365.CreateTransaction",
        "Contoso",
        "Contoso..Pos",
        "Contoso.Pos Ext",
        "",
        "1x.y",
    ],
)
def test_bad_or_reserved_action_names_are_refused(name: str) -> None:
    with pytest.raises(InvalidActionNameError):
        store_commerce_link(name, {"a": 1})


def test_extension_params_must_be_plain_json() -> None:
    with pytest.raises(DeepLinkError):
        store_commerce_link("Contoso.Pos.Do", {"x": float("nan")})
    with pytest.raises(DeepLinkError):
        store_commerce_link("Contoso.Pos.Do", {"x": object()})
    with pytest.raises(DeepLinkError):
        store_commerce_link("Contoso.Pos.Do", {1: "x"})  # type: ignore[dict-item]


@pytest.mark.parametrize(
    ("params", "path"),
    [
        ({"customerId": "C1", "items": [{"productId": 0}]}, ("items", 0, "productId")),
        ({"customerId": "C1", "items": [{"productId": "12"}]}, ("items", 0, "productId")),
        ({"customerId": "C1", "items": [{"productId": 2**53}]}, ("items", 0, "productId")),
        ({"customerId": "C1", "items": [{"productId": 1, "quantity": 0}]}, ("items", 0, "quantity")),
        ({"customerId": "C1", "items": [{"productId": 1, "qty": 1}]}, ("items", 0, "qty")),
        ({"customerId": "C" * 21}, ("customerId",)),
        ({"customerId": "C1", "mode": "Void And Create"}, ("mode",)),
        ({"customerID": "C1"}, ("customerID",)),
        ({}, ()),
    ],
)
def test_create_transaction_params_are_validated_with_wire_paths(
    params: dict[str, Any], path: tuple[Any, ...]
) -> None:
    with pytest.raises(ValidationError) as caught:
        store_commerce_link(CREATE_TRANSACTION, params)
    assert path in [error["loc"] for error in caught.value.errors()]


def test_recall_order_needs_a_sales_id_and_the_right_model() -> None:
    with pytest.raises(ValidationError):
        store_commerce_link(RECALL_ORDER, {"salesId": ""})
    with pytest.raises(DeepLinkError):
        store_commerce_link(RECALL_ORDER, CreateTransactionParams(customer_id="C1"))


def _link_of_length(length: int) -> tuple[str, dict[str, Any]]:
    """An extension action and params whose link is exactly ``length`` characters long."""
    for extra in range(4):  # the action name moves the length by one, Base64 by four
        action = "Contoso.Pos.N" + "o" * extra
        for n in range(1000, 1600):
            params = {"n": "x" * n}
            if len(store_commerce_link(action, params, max_length=10_000)) == length:
                return action, params
    raise AssertionError(f"no link of length {length}")


def test_a_url_of_2047_characters_is_accepted() -> None:
    action, params = _link_of_length(MAX_URL_LENGTH - 1)
    assert len(store_commerce_link(action, params)) == 2047


def test_a_url_of_2048_characters_is_refused_with_its_length_and_the_limit() -> None:
    action, params = _link_of_length(MAX_URL_LENGTH)
    with pytest.raises(DeepLinkTooLongError) as caught:
        store_commerce_link(action, params)
    assert (caught.value.length, caught.value.limit) == (2048, 2048)
    assert "2048 characters long" in str(caught.value) and "under 2048" in str(caught.value)
    assert isinstance(caught.value, ValueError)


def test_the_cloud_pos_form_counts_its_own_length() -> None:
    note = "x" * 1400
    assert store_commerce_link("Contoso.Pos.Note", {"n": note})
    long_base = "https://" + "p" * 150 + ".example/cpos"
    with pytest.raises(DeepLinkTooLongError):
        cloud_pos_link(long_base, "Contoso.Pos.Note", {"n": note})


@pytest.mark.parametrize("cpos_url", ["ftp://pos.example", "https://pos.example/?a=1", "pos.example", ""])
def test_cloud_pos_base_url_must_be_plain_http(cpos_url: str) -> None:
    with pytest.raises(DeepLinkError):
        cloud_pos_link(cpos_url, RECALL_ORDER, {"salesId": "S1"})


@pytest.mark.parametrize(
    "url",
    [
        "https://pos.example/cpos/POS?actionName=D365.RecallOrder&param=%%%",
        "ms-d365sc://executeAction?actionName=D365.RecallOrder&param=bm90IGpzb24=",  # "not json"
        "ms-d365sc://executeAction?actionName=D365.RecallOrder&param=WzEsMl0=",  # [1,2]
        "ms-d365sc://executeAction?actionName=D365.RecallOrder&param=/w==",  # not UTF-8
        "ms-d365sc://executeAction?actionName=D365.RecallOrder",
        "ms-d365sc://executeAction?param=e30=",
        "ms-d365sc://executeAction?actionName=A.B&actionName=C.D&param=e30=",
        "ms-d365sc://openPage?actionName=D365.RecallOrder&param=e30=",
        "ms-d365sc://executeAction?actionName=D365.Unknown&param=e30=",
        "mailto:someone?actionName=D365.RecallOrder&param=e30=",
        "https://pos.example/cpos/Other?actionName=D365.RecallOrder&param=e30=",
        "not a url at all",
    ],
)
def test_malformed_links_are_rejected(url: str) -> None:
    with pytest.raises(InvalidDeepLinkError):
        parse_deep_link(url)


def test_a_param_without_padding_is_still_read() -> None:
    assert parse_deep_link("ms-d365sc://executeAction?actionName=A.B&param=eyJhIjoxfQ").params == {"a": 1}


# ----- the abandoned-cart email's link


def _line(product_id: int, price: str, quantity: int | None = None) -> PricedItem:
    return PricedItem(
        product_id=product_id,
        unit_price=Decimal(price),
        quantity=Decimal(quantity) if quantity is not None else None,
    )


def test_a_cart_that_fits_keeps_every_line_in_order() -> None:
    lines = [_line(3, "10"), _line(1, "5", 2), _line(2, "1")]
    result = build_create_transaction_link("004003", lines, mode="VoidAndCreate")
    assert result.dropped_product_ids == []
    params = parse_deep_link(result.url).params
    assert [item["productId"] for item in params["items"]] == [3, 1, 2]
    assert params["items"][1]["quantity"] == 2
    assert params["customerId"] == "004003"
    assert params["mode"] == "VoidAndCreate"


def test_cheapest_lines_by_line_value_are_dropped_until_it_fits() -> None:
    # Line values: 100 (1 x 100), 30 (3 x 10), 20, 25, 20 (tie with product 13: the later goes first).
    lines = [
        _line(10, "100"),
        _line(11, "10", 3),
        _line(12, "20"),
        _line(13, "25"),
        _line(14, "20"),
    ]
    full = build_create_transaction_link("C1", lines, max_length=10_000).url
    one_line = store_commerce_link(
        CREATE_TRANSACTION, {"customerId": "C1", "items": [{"productId": 10}]}, max_length=10_000
    )
    # A limit that fits exactly two lines' worth of URL.
    two_lines = store_commerce_link(
        CREATE_TRANSACTION,
        {"customerId": "C1", "items": [{"productId": 10}, {"productId": 11, "quantity": 3}]},
    )
    assert len(one_line) < len(two_lines) < len(full)
    result = build_create_transaction_link("C1", lines, max_length=len(two_lines) + 1)
    assert sorted(result.dropped_product_ids) == [12, 13, 14]
    assert [item["productId"] for item in parse_deep_link(result.url).params["items"]] == [10, 11]
    result = build_create_transaction_link("C1", lines, max_length=len(one_line) + 1)
    assert sorted(result.dropped_product_ids) == [11, 12, 13, 14]


def test_with_a_tie_the_later_line_is_dropped_first() -> None:
    lines = [_line(1, "5"), _line(2, "5")]
    one = store_commerce_link(CREATE_TRANSACTION, {"customerId": "C1", "items": [{"productId": 1}]})
    result = build_create_transaction_link("C1", lines, max_length=len(one) + 1)
    assert result.dropped_product_ids == [2]


def test_many_lines_are_trimmed_under_the_default_limit_and_reported() -> None:
    lines = [_line(22565421963 + i, str(i + 1)) for i in range(200)]
    result = build_create_transaction_link("004003", lines)
    assert len(result.url) < MAX_URL_LENGTH
    kept = [item["productId"] for item in parse_deep_link(result.url).params["items"]]
    assert kept and result.dropped_product_ids
    assert set(kept) | set(result.dropped_product_ids) == {line.product_id for line in lines}
    # Every dropped line is cheaper than every kept one.
    assert max(result.dropped_product_ids) < min(kept)


def test_the_cloud_pos_form_can_be_trimmed_too() -> None:
    lines = [_line(22565421963 + i, "1") for i in range(200)]
    result = build_create_transaction_link("C1", lines, cpos_url=CPOS)
    assert result.url.startswith(CPOS + "/POS?")
    assert len(result.url) < MAX_URL_LENGTH and result.dropped_product_ids


def test_a_customer_only_link_is_allowed_but_nothing_at_all_is_not() -> None:
    assert parse_deep_link(build_create_transaction_link("C1", []).url).params == {"customerId": "C1"}
    with pytest.raises(DeepLinkError):
        build_create_transaction_link(None, [])


def test_when_even_no_lines_do_not_fit_the_length_error_is_raised() -> None:
    with pytest.raises(DeepLinkTooLongError):
        build_create_transaction_link("C1", [_line(1, "1")], max_length=50)
    with pytest.raises(DeepLinkTooLongError):
        build_create_transaction_link(None, [_line(1, "1")], max_length=50)
