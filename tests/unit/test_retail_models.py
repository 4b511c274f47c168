"""Retail Server entities: unknown fields are ignored, the ones the connector relies on are required
and typed, so a changed contract fails at the edge."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from shared.retail_server.client import CartSearchCriteria, format_datetime
from shared.retail_server.models import Cart, CartType, Customer


def cart(**overrides: Any) -> dict[str, Any]:
    wire: dict[str, Any] = {
        "Id": "cart-1",
        "CustomerId": "004011",
        "CartTypeValue": 1,
        "CartStatusValue": 1,
        "Version": 3,
        "ModifiedDateTime": "2026-11-30T10:00:00.123Z",
        "CartLines": [{"LineId": "l1", "ProductId": 68719493156, "Quantity": 2, "Price": 49.5}],
        "SomeFieldOfANewerVersion": {"x": 1},
    }
    wire.update(overrides)
    return {k: v for k, v in wire.items() if v is not ...}


def test_a_cart_with_unknown_fields_is_read() -> None:
    parsed = Cart.model_validate(cart())
    assert parsed.cart_type_value == CartType.SHOPPING and parsed.version == 3
    assert parsed.cart_lines[0].price == pytest.approx(49.5)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"Version": ...}, "Version"),
        ({"Version": "three"}, "Version"),
        ({"Version": -1}, "Version"),
        ({"CartTypeValue": ...}, "CartTypeValue"),
        ({"ModifiedDateTime": "2026-11-30T10:00:00"}, "ModifiedDateTime"),
        ({"CartLines": [{"LineId": "l1", "ProductId": 1, "Price": 1}]}, "Quantity"),
        ({"CartLines": [{"LineId": "l1", "ProductId": 1, "Quantity": 1, "Price": "cheap"}]}, "Price"),
    ],
)
def test_a_cart_breaking_the_contract_is_refused(overrides: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        Cart.model_validate(cart(**overrides))
    assert field in {str(part) for error in caught.value.errors() for part in error["loc"]}


def test_a_customer_needs_its_account_number() -> None:
    with pytest.raises(ValidationError):
        Customer.model_validate({"FirstName": "x"})


@pytest.mark.parametrize(
    ("wire", "microsecond"),
    [
        ("2026-12-01T10:00:00.1234567Z", 123_456),
        ("2026-12-01T10:00:00.9999999Z", 999_999),
        ("2026-12-01T11:00:00.1234565+01:00", 123_456),
        ("2026-12-01T10:00:00.12Z", 120_000),
        ("2026-12-01T10:00:00Z", 0),
    ],
)
def test_seven_fraction_digits_are_cut_never_rounded(wire: str, microsecond: int) -> None:
    """.NET ticks have one digit more than a datetime: a parsed time is never later than the real
    one, so a search from it finds the cart again instead of skipping a cart a tick after it."""
    parsed = Cart.model_validate(cart(ModifiedDateTime=wire)).modified_date_time
    assert parsed is not None
    assert parsed.astimezone(UTC).replace(tzinfo=None) == datetime(2026, 12, 1, 10, 0, 0, microsecond)


def test_search_bounds_go_on_the_wire_as_precisely_as_they_are_held() -> None:
    bound = datetime(2026, 12, 1, 10, 0, 0, 123_456, tzinfo=UTC)
    wire = CartSearchCriteria(last_modified_from=bound, last_modified_to=bound).wire()
    assert wire["LastModifiedDateTimeFrom"] == wire["LastModifiedDateTimeTo"] == "2026-12-01T10:00:00.123456Z"
    assert datetime.fromisoformat(format_datetime(bound)) == bound
