"""Retail Server entities, as far as the connector uses them.

PascalCase wire names are aliases; unknown fields are ignored (newer Commerce versions add them),
while the fields we rely on are typed and validated, so a changed contract fails loudly here
rather than deep inside an email.
"""

from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal
from enum import IntEnum

from pydantic import AliasGenerator, BaseModel, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_pascal


class CartType(IntEnum):
    NONE = 0
    SHOPPING = 1
    CHECKOUT = 2
    CUSTOMER_ORDER = 3
    INCOME_EXPENSE = 4
    ACCOUNT_DEPOSIT = 5


class CartStatus(IntEnum):
    NONE = 0
    CREATED = 1
    SUSPENDED = 2
    VOIDED = 3


class ContactType(IntEnum):
    """``AddressTypeValue`` of a customer's contact (the subset used here)."""

    NONE = 0
    PHONE = 1
    EMAIL = 2
    URL = 3


# The fraction of an Edm.DateTimeOffset literal beyond the sixth digit.
_BEYOND_MICROSECONDS = re.compile(r"(?<=\.\d{6})\d+")


def cut_to_microseconds(value: object) -> object:
    """Drop the fraction digits of a timestamp literal that a ``datetime`` cannot hold.

    Retail Server writes .NET ticks, up to seven fraction digits. Cutting (never rounding) keeps
    every parsed time at or before the real one, so a cursor taken from it, sent back as a search's
    lower bound, still finds the cart it came from and every cart after it; carts that differ only
    in the seventh digit become one instant, which the keyset paging already handles.
    """
    if isinstance(value, str):
        return _BEYOND_MICROSECONDS.sub("", value, count=1)
    return value


class RetailModel(BaseModel):
    model_config = ConfigDict(
        alias_generator=AliasGenerator(validation_alias=to_pascal, serialization_alias=to_pascal),
        populate_by_name=True,
        extra="ignore",
        frozen=True,
    )


class CartLine(RetailModel):
    line_id: str = ""
    product_id: int | None = None
    item_id: str | None = None
    description: str | None = None
    # Required: an email that showed a quantity or price of 0 would be worse than none.
    quantity: Decimal
    price: Decimal
    extended_price: Decimal | None = None
    total_amount: Decimal | None = None
    discount_amount: Decimal | None = None
    is_voided: bool = False
    is_gift_card_line: bool = False
    line_number: int | None = None


class Cart(RetailModel):
    id: str = Field(min_length=1)
    customer_id: str | None = None
    channel_id: int | None = None
    # Required: detection, the ledger key and the re-check before sending all depend on them.
    cart_type_value: int
    cart_status_value: int = CartStatus.NONE
    version: int = Field(ge=0)
    modified_date_time: datetime | None = None
    subtotal_amount: Decimal | None = None
    total_amount: Decimal | None = None
    tax_amount: Decimal | None = None
    discount_amount: Decimal | None = None
    cart_lines: list[CartLine] = Field(default_factory=list)

    @field_validator("modified_date_time", mode="before")
    @classmethod
    def _cut_to_microseconds(cls, value: object) -> object:
        return cut_to_microseconds(value)

    @field_validator("modified_date_time")
    @classmethod
    def _must_be_aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("ModifiedDateTime must carry a UTC offset")
        return value

    @property
    def active_lines(self) -> list[CartLine]:
        return [line for line in self.cart_lines if not line.is_voided]


class ContactInfo(RetailModel):
    address_type_value: int = ContactType.NONE
    value: str | None = None
    is_primary: bool = False
    is_opted_in_marketing: bool = False
    is_mobile_phone: bool = False


class Customer(RetailModel):
    account_number: str = Field(min_length=1)
    record_id: int | None = None
    first_name: str | None = None
    middle_name: str | None = None
    last_name: str | None = None
    name: str | None = None
    email: str | None = None
    phone: str | None = None
    language: str | None = None
    currency_code: str | None = None
    blocked: bool = False
    opt_out_personalization: bool = False
    opt_out_web_activity_tracking: bool = False
    contacts: list[ContactInfo] = Field(default_factory=list)


class SimpleProduct(RetailModel):
    record_id: int
    item_id: str | None = None
    name: str | None = None
    description: str | None = None
    product_type_value: int | None = None
    base_price: Decimal | None = None
    price: Decimal | None = None
    adjusted_price: Decimal | None = None
    master_product_id: int | None = None
    primary_image_url: str | None = None


class MediaLocation(RetailModel):
    uri: str
    alt_text: str | None = None
    is_default: bool = False
    is_self_hosted: bool = False
    priority: int | None = None


class ChannelConfiguration(RetailModel):
    record_id: int
    currency: str = Field(min_length=3, max_length=3)
    default_language_id: str | None = None
    time_zone_info_id: str | None = None
    channel_natural_id: str | None = None
    country_region_id: str | None = None
    company_currency: str | None = None
    price_includes_sales_tax: bool | None = None


class SalesLine(RetailModel):
    product_id: int | None = None
    item_id: str | None = None
    quantity: Decimal | None = None
    total_amount: Decimal | None = None
    is_voided: bool = False


class SalesOrder(RetailModel):
    """An order or store transaction as ``SalesOrders/SearchOrders`` answers it
    (docs/reference/order-lookup.md).

    ``TerminalId`` is set on a transaction rung up at a store's till; an online order has none."""

    id: str = Field(min_length=1)
    sales_id: str | None = None
    customer_id: str | None = None
    channel_id: int | None = None
    store_id: str | None = None
    terminal_id: str | None = None
    channel_reference_id: str | None = None
    created_date_time: datetime
    total_amount: Decimal
    currency_code: str | None = None
    sales_lines: list[SalesLine] = Field(default_factory=list)

    @field_validator("created_date_time", mode="before")
    @classmethod
    def _cut_to_microseconds(cls, value: object) -> object:
        return cut_to_microseconds(value)

    @field_validator("created_date_time")
    @classmethod
    def _must_be_aware(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("CreatedDateTime must carry a UTC offset")
        return value

    @property
    def in_store(self) -> bool:
        return bool(self.terminal_id)

    @property
    def product_ids(self) -> frozenset[int]:
        return frozenset(
            line.product_id for line in self.sales_lines if line.product_id is not None and not line.is_voided
        )
