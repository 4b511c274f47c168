"""Retail Server entities: unknown fields are ignored, the ones the connector relies on are required
and typed, so a changed contract fails at the edge."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

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
