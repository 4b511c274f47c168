"""The sandbox's Commerce data: channels, customers, products and carts, generated from a seed.

Everything is derived from ``random.Random(seed)`` and the ``now`` passed in, never from the wall
clock, so the same seed and instant always give the same data.

Times have the precision of Retail Server's: .NET ticks of 100 ns, seven fraction digits, one more
than a Python ``datetime`` holds. A cart keeps its ``ModifiedDateTime`` as a ``datetime`` plus the
seventh digit (``modified_100ns``); searches compare and sort on the whole tick count, and the wire
writes the fraction as .NET does, trailing zeros trimmed, so a share of the generated carts carries
all seven digits and a client that rounds, or cuts its bounds coarser than its cursor, is caught.

Entities are plain dataclasses with snake_case attributes; ``wire()`` renders the PascalCase JSON
Retail Server sends (amounts as JSON numbers, enums as ints with a ``Value`` suffix).
"""

from __future__ import annotations

import base64
import bisect
import itertools
import random
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from sandbox import catalog

CART_SHOPPING = 1
CART_CHECKOUT = 2
CART_CUSTOMER_ORDER = 3
STATUS_CREATED = 1
STATUS_VOIDED = 3
CONTACT_PHONE = 1
CONTACT_EMAIL = 2
PRODUCT_STANDALONE = 4
PRODUCT_VARIANT = 5
CUSTOMER_PERSON = 1
CUSTOMER_ORGANIZATION = 2

# Physical stores (their own channels in Commerce) where customers also buy; see ``add_order``.
STORE_CHANNEL_IDS = {"HOU-01": 5637145001, "HOU-02": 5637145002, "BER-01": 5637145101}

CUSTOMER_COUNT = 60
PRODUCT_COUNT = len(catalog.PRODUCTS)
REGULAR_CARTS = {"128": 450, "067": 160}
SAME_INSTANT_BLOCK = 300
# Outside the default one-day detection window, inside the three days the data spans.
SAME_INSTANT_AGE = timedelta(hours=30)
# The catalogue position of the one product whose media are not published: Products/GetByIds
# returns it (without a PrimaryImageUrl), Products(id)/GetMediaLocations answers 404.
UNPUBLISHED_MEDIA_INDEX = 23

_CENT = Decimal("0.01")
_ALPHANUMERIC = str.maketrans("+/", "Qz")


def money(value: Decimal) -> Decimal:
    return value.quantize(_CENT, rounding=ROUND_HALF_UP)


TICKS_PER_SECOND = 10_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EDM_DATETIME = re.compile(
    r"(?P<base>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(?:\.(?P<fraction>\d{1,7}))?(?P<offset>Z|[+-]\d{2}:\d{2})"
)


def to_utc(value: datetime) -> datetime:
    """``value`` in UTC; naive datetimes are refused."""
    if value.tzinfo is None:
        raise ValueError("naive datetimes are ambiguous; pass an aware UTC datetime")
    return value.astimezone(UTC)


def ticks(value: datetime, extra_100ns: int = 0) -> int:
    """100-ns ticks since the Unix epoch: ``value`` plus the seventh fraction digit it cannot hold."""
    if not 0 <= extra_100ns <= 9:
        raise ValueError("extra_100ns is the seventh fraction digit, 0-9")
    delta = to_utc(value) - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * TICKS_PER_SECOND + delta.microseconds * 10 + extra_100ns


def format_ticks(value: int) -> str:
    """An Edm.DateTimeOffset in UTC as .NET writes one: up to seven digits, trailing zeros trimmed."""
    seconds, fraction = divmod(value, TICKS_PER_SECOND)
    text = (_EPOCH + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S")
    digits = f"{fraction:07d}".rstrip("0")
    return f"{text}.{digits}Z" if digits else f"{text}Z"


def format_datetime(value: datetime, extra_100ns: int = 0) -> str:
    """``value`` (plus a seventh fraction digit) on the wire, e.g. ``2026-11-22T09:30:00.1234567Z``."""
    return format_ticks(ticks(value, extra_100ns))


def parse_ticks(text: str) -> int:
    """An Edm.DateTimeOffset literal to 100-ns ticks, exactly: what Retail Server compares with."""
    match = _EDM_DATETIME.fullmatch(text)
    if match is None:
        raise ValueError(
            "must be an Edm.DateTimeOffset with an offset and at most 7 fraction digits, "
            "e.g. 2026-12-01T10:00:00.1234567Z"
        )
    offset = "+00:00" if match["offset"] == "Z" else match["offset"]
    base = datetime.fromisoformat(match["base"] + offset)
    return ticks(base) + int((match["fraction"] or "0").ljust(7, "0"))


def _number(value: Decimal) -> float:
    return float(value)


@dataclass
class Channel:
    oun: str
    channel_id: int
    name: str
    currency: str
    language: str
    time_zone: str
    country: str
    price_includes_tax: bool
    tax_rate: Decimal
    # Prices in the catalogue are USD; other channels convert with a fixed factor.
    price_factor: Decimal = Decimal(1)

    def price_of(self, product: Product) -> Decimal:
        return money(product.base_price * self.price_factor)

    def configuration_wire(self) -> dict[str, Any]:
        return {
            "RecordId": self.channel_id,
            "ChannelNaturalId": self.oun,
            "Currency": self.currency,
            "CompanyCurrency": self.currency,
            "DefaultLanguageId": self.language,
            "TimeZoneInfoId": self.time_zone,
            "CountryRegionId": self.country,
            "PriceIncludesSalesTax": self.price_includes_tax,
            "InventLocation": f"{self.oun}-WH",
            "Languages": [{"LanguageId": self.language, "IsDefault": True}],
            "ExtensionProperties": [],
        }


@dataclass
class Contact:
    address_type_value: int
    value: str
    is_primary: bool = True
    is_opted_in_marketing: bool = False
    is_mobile_phone: bool = False

    def wire(self) -> dict[str, Any]:
        return {
            "AddressTypeValue": self.address_type_value,
            "Value": self.value,
            "IsPrimary": self.is_primary,
            "IsOptedInMarketing": self.is_opted_in_marketing,
            "IsMobilePhone": self.is_mobile_phone,
            "IsPrivate": False,
        }


@dataclass
class Customer:
    account_number: str
    record_id: int
    first_name: str
    last_name: str
    name: str
    email: str | None
    phone: str | None
    language: str
    currency_code: str
    customer_type_value: int = CUSTOMER_PERSON
    opt_out_personalization: bool = False
    opt_out_web_activity_tracking: bool = False
    blocked: bool = False
    contacts: list[Contact] = field(default_factory=list)

    @property
    def opted_in_marketing(self) -> bool:
        return any(c.is_opted_in_marketing for c in self.contacts if c.address_type_value == CONTACT_EMAIL)

    def wire(self) -> dict[str, Any]:
        return {
            "AccountNumber": self.account_number,
            "RecordId": self.record_id,
            "FirstName": self.first_name,
            "MiddleName": "",
            "LastName": self.last_name,
            "Name": self.name,
            "Email": self.email,
            "ReceiptEmail": self.email,
            "Phone": self.phone,
            "Language": self.language,
            "CurrencyCode": self.currency_code,
            "CustomerTypeValue": self.customer_type_value,
            "OptOutPersonalization": self.opt_out_personalization,
            "OptOutWebActivityTracking": self.opt_out_web_activity_tracking,
            "Blocked": self.blocked,
            "IsB2b": self.customer_type_value == CUSTOMER_ORGANIZATION,
            "Contacts": [c.wire() for c in self.contacts],
            "Addresses": [],
            "Attributes": [],
            "ExtensionProperties": [],
        }


@dataclass
class MediaItem:
    uri: str
    alt_text: str | None
    is_default: bool
    priority: int

    def wire(self) -> dict[str, Any]:
        return {
            "Uri": self.uri,
            "AltText": self.alt_text,
            "IsDefault": self.is_default,
            "IsSelfHosted": False,
            "Priority": self.priority,
        }


@dataclass
class Product:
    record_id: int
    item_id: str
    name: str
    description: str
    base_price: Decimal
    product_type_value: int = PRODUCT_STANDALONE
    master_product_id: int | None = None
    is_gift_card: bool = False
    media: list[MediaItem] = field(default_factory=list)
    # False: the product's media are not published, and its media look-up answers 404.
    media_published: bool = True

    @property
    def primary_image_url(self) -> str | None:
        if not self.media_published:
            return None
        defaults = [m for m in self.media if m.is_default] or self.media
        return defaults[0].uri if defaults else None

    def wire(self, channel: Channel) -> dict[str, Any]:
        price = _number(channel.price_of(self))
        return {
            "RecordId": self.record_id,
            "ItemId": self.item_id,
            "Name": self.name,
            "Description": self.description,
            "ProductTypeValue": self.product_type_value,
            "BasePrice": price,
            "Price": price,
            "AdjustedPrice": price,
            "MasterProductId": self.master_product_id,
            "PrimaryImageUrl": self.primary_image_url,
            "DefaultUnitOfMeasure": "ea",
            "Dimensions": [],
            "ExtensionProperties": [],
        }


@dataclass
class CartLine:
    line_id: str
    line_number: int
    product_id: int
    item_id: str
    description: str
    quantity: Decimal
    price: Decimal
    discount_amount: Decimal
    tax_amount: Decimal
    net_amount_without_tax: Decimal
    total_amount: Decimal
    is_voided: bool = False
    is_gift_card_line: bool = False

    @property
    def extended_price(self) -> Decimal:
        return money(self.price * self.quantity)

    def wire(self) -> dict[str, Any]:
        return {
            "LineId": self.line_id,
            "LineNumber": self.line_number,
            "ProductId": self.product_id,
            "ItemId": self.item_id,
            "InventoryDimensionId": "",
            "Description": self.description,
            "Quantity": _number(self.quantity),
            "Price": _number(self.price),
            "NetPrice": _number(self.price),
            "ExtendedPrice": _number(self.extended_price),
            "DiscountAmount": _number(self.discount_amount),
            "TaxAmount": _number(self.tax_amount),
            "NetAmountWithoutTax": _number(self.net_amount_without_tax),
            "TotalAmount": _number(self.total_amount),
            "UnitOfMeasureSymbol": "ea",
            "IsVoided": self.is_voided,
            "IsGiftCardLine": self.is_gift_card_line,
            "CatalogId": 0,
            "ExtensionProperties": [],
        }


@dataclass
class Cart:
    id: str
    customer_id: str
    channel_id: int
    cart_type_value: int
    cart_status_value: int
    version: int
    modified_date_time: datetime
    begin_date_time: datetime
    lines: list[CartLine] = field(default_factory=list)
    # The seventh fraction digit of ModifiedDateTime (100 ns), which a datetime cannot hold.
    modified_100ns: int = 0

    @property
    def active_lines(self) -> list[CartLine]:
        return [line for line in self.lines if not line.is_voided]

    @property
    def modified_ticks(self) -> int:
        """``ModifiedDateTime`` at Retail Server's full precision: what searches compare and sort on."""
        return ticks(self.modified_date_time, self.modified_100ns)

    def wire(self) -> dict[str, Any]:
        active = self.active_lines
        subtotal = sum((line.extended_price for line in active), Decimal(0))
        discount = sum((line.discount_amount for line in active), Decimal(0))
        tax = sum((line.tax_amount for line in active), Decimal(0))
        total = sum((line.total_amount for line in active), Decimal(0))
        return {
            "Id": self.id,
            "CustomerId": self.customer_id,
            "ChannelId": self.channel_id,
            "CartTypeValue": self.cart_type_value,
            "CartStatusValue": self.cart_status_value,
            "Version": self.version,
            "ModifiedDateTime": format_datetime(self.modified_date_time, self.modified_100ns),
            "BeginDateTime": format_datetime(self.begin_date_time),
            "IsSuspended": False,
            "SubtotalAmount": _number(subtotal),
            "DiscountAmount": _number(discount),
            "TaxAmount": _number(tax),
            "TotalAmount": _number(total),
            "AmountDue": _number(total),
            "TotalItems": _number(sum((line.quantity for line in active), Decimal(0))),
            "CartLines": [line.wire() for line in self.lines],
            "Coupons": [],
            "DiscountCodes": [],
            "ExtensionProperties": [],
        }


@dataclass
class OrderLine:
    product_id: int
    item_id: str
    quantity: Decimal
    total_amount: Decimal

    def wire(self) -> dict[str, Any]:
        return {
            "ProductId": self.product_id,
            "ItemId": self.item_id,
            "Quantity": _number(self.quantity),
            "TotalAmount": _number(self.total_amount),
            "IsVoided": False,
        }


@dataclass
class SalesOrder:
    """An order: what checking a cart out leaves behind (the cart itself is gone from Retail
    Server), or a purchase made elsewhere (``add_order``), online or at a store's till."""

    sales_id: str
    cart_id: str
    customer_id: str
    channel_id: int
    created_date_time: datetime
    total_amount: Decimal
    currency: str = "USD"
    # The store's operating unit number; an online order names its online channel's.
    store_id: str = ""
    # Set on a transaction rung up at a till; an online order has none.
    terminal_id: str = ""
    lines: list[OrderLine] = field(default_factory=list)


def default_channels() -> dict[str, Channel]:
    return {
        "128": Channel(
            oun="128",
            channel_id=5637144592,
            name="Houston",
            currency="USD",
            language="en-us",
            time_zone="Central Standard Time",
            country="USA",
            price_includes_tax=False,
            tax_rate=Decimal("0.0825"),
        ),
        "067": Channel(
            oun="067",
            channel_id=5637144593,
            name="Berlin",
            currency="EUR",
            language="de-de",
            time_zone="W. Europe Standard Time",
            country="DEU",
            price_includes_tax=True,
            tax_rate=Decimal("0.19"),
            price_factor=Decimal("0.92"),
        ),
    }


class CustomerBook(dict[str, Customer]):
    """The customers by account number; a bulk cart's customer is built when first asked for."""

    def __init__(self, data: SandboxData) -> None:
        super().__init__()
        self._data = data

    def __missing__(self, account: str) -> Customer:
        customer = self._data.bulk_customer(account)
        if customer is None:
            raise KeyError(account)
        self[account] = customer
        return customer

    def __contains__(self, account: object) -> bool:
        return super().__contains__(account) or (
            isinstance(account, str) and self._data.bulk_customer(account) is not None
        )

    def get(self, account: str, default: Customer | None = None) -> Customer | None:  # type: ignore[override]
        try:
            return self[account]
        except KeyError:
            return default


# Bulk carts (``add_bulk_carts``) lie inside the default detection window (LOOKBACK_MINUTES 1440,
# ABANDONED_AFTER_MINUTES 60) and are old enough for a first reminder step of up to an hour.
BULK_NEWEST_AGE = timedelta(hours=2)
BULK_SPAN = timedelta(hours=20)
# Every BULK_NO_LINES-th bulk cart is empty (detection skips it); every BULK_SECOND_CART-th belongs
# to the customer of the cart before it (that customer's older cart is superseded).
BULK_NO_LINES = 20
BULK_SECOND_CART = 8


@dataclass(frozen=True)
class BulkCarts:
    """``count`` carts of one channel, made on demand from ``(seed, oun, index)``: index order is
    ``ModifiedDateTime`` order (one distinct 100-ns tick each), so a search is index arithmetic and
    a hundred thousand carts cost no memory until a page of them is read."""

    oun: str
    count: int
    first_ticks: int
    step_ticks: int

    def ticks_of(self, index: int) -> int:
        return self.first_ticks + index * self.step_ticks

    def cart_id(self, index: int) -> str:
        return f"BULK{self.oun}X{index:07d}"

    def index_of(self, cart_id: str) -> int | None:
        prefix = f"BULK{self.oun}X"
        if not cart_id.startswith(prefix) or not cart_id[len(prefix) :].isdigit():
            return None
        index = int(cart_id[len(prefix) :])
        return index if index < self.count else None

    def customer_index(self, index: int) -> int:
        return index - 1 if index % BULK_SECOND_CART == BULK_SECOND_CART - 1 else index

    def account(self, customer_index: int) -> str:
        return f"B{self.oun}{customer_index:07d}"

    def customer_of(self, account: str) -> int | None:
        prefix = f"B{self.oun}"
        if not account.startswith(prefix) or not account[len(prefix) :].isdigit():
            return None
        index = int(account[len(prefix) :])
        if index >= self.count or self.customer_index(index) != index:
            return None
        return index

    def carts_of(self, customer_index: int) -> list[int]:
        pair = (customer_index, customer_index + 1)
        return [i for i in pair if i < self.count and self.customer_index(i) == customer_index]

    def in_range(self, from_ticks: int | None, to_ticks: int | None) -> range:
        """The indexes whose tick lies in [from_ticks, to_ticks]."""
        low = 0 if from_ticks is None else max(0, -(-(from_ticks - self.first_ticks) // self.step_ticks))
        high = (
            self.count
            if to_ticks is None
            else min(self.count, (to_ticks - self.first_ticks) // self.step_ticks + 1)
        )
        return range(low, max(low, high))


def merged_page(
    regular: Sequence[Cart], bulk: Sequence[int], key: Callable[[int], tuple[int, str]], skip: int, top: int
) -> Iterator[Cart | int]:
    """Items ``skip`` to ``skip + top`` of two lists, each sorted by (ticks, id), merged in that order:
    ``regular`` carts, and ``bulk`` indexes whose sort key ``key`` gives. Only the page is looked at."""
    regular_keys = [(c.modified_ticks, c.id) for c in regular]

    def position(j: int) -> int:  # where bulk[j] lands in the merged order
        return j + bisect.bisect_left(regular_keys, key(bulk[j]))

    low, high = 0, len(bulk)
    while low < high:  # bulk items among the first ``skip`` merged
        middle = (low + high) // 2
        if position(middle) < skip:
            low = middle + 1
        else:
            high = middle
    j, r = low, skip - low
    for _ in range(top):
        if j < len(bulk) and (r >= len(regular) or key(bulk[j]) < regular_keys[r]):
            yield bulk[j]
            j += 1
        elif r < len(regular):
            yield regular[r]
            r += 1
        else:
            return


class SandboxData:
    """The generated data set; tests read and change it directly or through the helpers below."""

    def __init__(self, *, seed: int = 42, now: datetime) -> None:
        self.seed = seed
        self.now = to_utc(now)
        self._rng = random.Random(seed)
        self.channels: dict[str, Channel] = default_channels()
        self.bulk: dict[str, BulkCarts] = {}
        self.customers: dict[str, Customer] = CustomerBook(self)
        # Distinct carts answered by date-bounded Carts/Search calls, per channel (what detection read).
        self.served: dict[str, set[str]] = {}
        self.products: dict[int, Product] = {}
        self.carts: dict[str, Cart] = {}
        self.orders: list[SalesOrder] = []
        self._shelf: list[Product] = []
        self._generate_products()
        self._generate_customers()
        self._generate_carts()

    # ----- look-ups

    def channel_by_oun(self, oun: str) -> Channel | None:
        return self.channels.get(oun)

    def channel_by_id(self, channel_id: int) -> Channel | None:
        return next((c for c in self.channels.values() if c.channel_id == channel_id), None)

    def carts_in(self, oun: str) -> list[Cart]:
        channel = self.channels[oun]
        return [cart for cart in self.carts.values() if cart.channel_id == channel.channel_id]

    def same_instant_block(self) -> datetime:
        """The ``ModifiedDateTime`` shared by the block of carts that exercises keyset paging."""
        return self.now - SAME_INSTANT_AGE

    # ----- mutation helpers for tests

    def touch_cart(self, cart_id: str, at: datetime, *, extra_100ns: int = 0) -> Cart:
        """The shopper changed the cart at ``at``: new ``Version`` and ``ModifiedDateTime``."""
        cart = self._cart(cart_id)
        ticks(at, extra_100ns)  # refuses a naive time or a digit out of range before anything changes
        cart.modified_date_time, cart.modified_100ns = to_utc(at), extra_100ns
        cart.version += 1
        return cart

    def void_cart(self, cart_id: str, at: datetime | None = None) -> Cart:
        cart = self._cart(cart_id)
        cart.cart_status_value = STATUS_VOIDED
        cart.version += 1
        cart.modified_date_time, cart.modified_100ns = self._when(cart, at), 0
        return cart

    def checkout_cart(self, cart_id: str, at: datetime | None = None) -> SalesOrder:
        """The cart became a sales order: it leaves the cart table and an order is recorded."""
        cart = self._cart(cart_id)
        total = sum((line.total_amount for line in cart.active_lines), Decimal(0))
        channel = self.channel_by_id(cart.channel_id)
        order = SalesOrder(
            sales_id=f"SO-{len(self.orders) + 1:06d}",
            cart_id=cart.id,
            customer_id=cart.customer_id,
            channel_id=cart.channel_id,
            created_date_time=self._when(cart, at),
            total_amount=total,
            currency=channel.currency if channel is not None else "USD",
            store_id=channel.oun if channel is not None else "",
            lines=[
                OrderLine(line.product_id, line.item_id, line.quantity, line.total_amount)
                for line in cart.active_lines
            ],
        )
        del self.carts[cart_id]
        self.orders.append(order)
        return order

    def add_order(
        self,
        *,
        customer_id: str,
        at: datetime,
        oun: str = "128",
        lines: Sequence[tuple[int, int]],
        in_store: str | None = None,
    ) -> SalesOrder:
        """An order placed without a cart of the sandbox: online in channel ``oun``, or, with
        ``in_store`` (a store number such as ``"HOU-01"``), at a till of that store; ``lines`` are
        ``(product RecordId, quantity)`` pairs priced as in ``oun``."""
        channel = self.channels[oun]
        if in_store is not None and in_store not in STORE_CHANNEL_IDS:
            raise ValueError(f"no store {in_store!r}; the sandbox's stores are {sorted(STORE_CHANNEL_IDS)}")
        order_lines = [
            OrderLine(
                product_id,
                self.products[product_id].item_id,
                Decimal(quantity),
                money(channel.price_of(self.products[product_id]) * quantity),
            )
            for product_id, quantity in lines
        ]
        prefix = "ST" if in_store else "SO"
        order = SalesOrder(
            sales_id=f"{prefix}-{len(self.orders) + 1:06d}",
            cart_id="",
            customer_id=customer_id,
            channel_id=STORE_CHANNEL_IDS[in_store] if in_store else channel.channel_id,
            created_date_time=to_utc(at),
            total_amount=sum((line.total_amount for line in order_lines), Decimal(0)),
            currency=channel.currency,
            store_id=in_store or channel.oun,
            terminal_id=f"{in_store}-T1" if in_store else "",
            lines=order_lines,
        )
        self.orders.append(order)
        return order

    def add_cart(
        self,
        *,
        oun: str = "128",
        customer_id: str = "",
        modified: datetime | None = None,
        lines: Sequence[tuple[int, int]] | None = None,
        cart_type_value: int = CART_SHOPPING,
        cart_status_value: int = STATUS_CREATED,
        cart_id: str | None = None,
        version: int = 1,
        voided_lines: bool = False,
        modified_100ns: int = 0,
    ) -> Cart:
        """Add a cart; ``lines`` are ``(product RecordId, quantity)`` pairs priced from the catalogue.

        Without ``lines`` the cart gets one unit of the first product; pass ``[]`` for an empty cart.
        ``modified_100ns`` is the seventh fraction digit of ``ModifiedDateTime`` (0-9).
        """
        channel = self.channels[oun]
        when = to_utc(modified) if modified is not None else self.now
        ticks(when, modified_100ns)
        if lines is None:
            lines = [(next(iter(self.products)), 1)]
        products = [(self.products[product_id], quantity) for product_id, quantity in lines]
        cart = Cart(
            id=cart_id or self._cart_id(),
            customer_id=customer_id,
            channel_id=channel.channel_id,
            cart_type_value=cart_type_value,
            cart_status_value=cart_status_value,
            version=version,
            modified_date_time=when,
            begin_date_time=when,
            lines=self._lines(channel, products, voided=voided_lines, discount_every=0),
            modified_100ns=modified_100ns,
        )
        if cart.id in self.carts:
            raise ValueError(f"cart {cart.id} exists already")
        self.carts[cart.id] = cart
        return cart

    def _cart(self, cart_id: str) -> Cart:
        try:
            return self.carts[cart_id]
        except KeyError:
            raise KeyError(f"no cart {cart_id!r} in the sandbox") from None

    def _when(self, cart: Cart, at: datetime | None) -> datetime:
        return to_utc(at) if at is not None else max(cart.modified_date_time, self.now)

    # ----- bulk carts for the benchmarks (python -m sandbox --carts OUN=COUNT)

    def add_bulk_carts(
        self, oun: str, count: int, *, newest: datetime | None = None, span: timedelta = BULK_SPAN
    ) -> BulkCarts:
        """``count`` more carts in channel ``oun``, each with its own named customer (but see
        ``BULK_SECOND_CART``), spread evenly over ``span`` ending at ``newest`` (by default
        ``BULK_NEWEST_AGE`` ago; the recovery demo spreads them over days to come).
        Nothing is generated until a search or a look-up asks for it."""
        if oun not in self.channels:
            raise ValueError(f"no channel {oun}")
        if count < 1:
            raise ValueError("count must be at least 1")
        last = ticks(newest if newest is not None else self.now - BULK_NEWEST_AGE)
        # An odd step puts a seventh fraction digit on most carts, as Retail Server's times have.
        step = max(11, (span // timedelta(microseconds=1)) * 10 // count) | 1
        bulk = BulkCarts(oun=oun, count=count, first_ticks=last - (count - 1) * step, step_ticks=step)
        self.bulk[oun] = bulk
        return bulk

    def bulk_cart(self, oun: str, index: int) -> Cart:
        bulk = self.bulk[oun]
        channel = self.channels[oun]
        rng = random.Random(f"{self.seed}:{oun}:{index}")
        seconds, fraction = divmod(bulk.ticks_of(index), TICKS_PER_SECOND)
        modified = _EPOCH + timedelta(seconds=seconds, microseconds=fraction // 10)
        line_count = 0 if index % BULK_NO_LINES == BULK_NO_LINES - 1 else rng.randint(1, 3)
        chosen = [(rng.choice(self._shelf), rng.randint(1, 3)) for _ in range(line_count)]
        return Cart(
            id=bulk.cart_id(index),
            customer_id=bulk.account(bulk.customer_index(index)),
            channel_id=channel.channel_id,
            cart_type_value=CART_SHOPPING,
            cart_status_value=STATUS_CREATED,
            version=1 + index % 5,
            modified_date_time=modified,
            begin_date_time=modified - timedelta(seconds=rng.randrange(0, 3 * 3600)),
            lines=self._lines(channel, chosen, voided=False, discount_every=4, rng=rng),
            modified_100ns=fraction % 10,
        )

    def bulk_customer(self, account: str) -> Customer | None:
        for oun, bulk in self.bulk.items():
            index = bulk.customer_of(account)
            if index is None:
                continue
            channel = self.channels[oun]
            email = f"shopper.{oun}.{index}@example.com"
            return Customer(
                account_number=account,
                record_id=30000000000 + int(oun) * 10_000_000 + index,
                first_name="Shopper",
                last_name=f"{oun}-{index}",
                name=f"Shopper {oun}-{index}",
                email=email,
                phone=None,
                language=channel.language,
                currency_code=channel.currency,
                contacts=[Contact(CONTACT_EMAIL, email, is_opted_in_marketing=True)],
            )
        return None

    def is_bulk_email(self, email: str) -> bool:
        """Whether ``email`` is the address of a bulk customer (``shopper.<oun>.<index>@example.com``)."""
        local, _, domain = email.casefold().partition("@")
        parts = local.split(".")
        if domain != "example.com" or len(parts) != 3 or parts[0] != "shopper" or not parts[2].isdigit():
            return False
        bulk = self.bulk.get(parts[1])
        return bulk is not None and bulk.customer_of(bulk.account(int(parts[2]))) is not None

    def bulk_find(self, cart_id: str) -> Cart | None:
        for oun, bulk in self.bulk.items():
            index = bulk.index_of(cart_id)
            if index is not None:
                return self.bulk_cart(oun, index)
        return None

    # ----- generation

    def _generate_products(self) -> None:
        rng = self._rng
        for index, (name, description, price) in enumerate(catalog.PRODUCTS):
            item_id = str(91001 + index)
            record_id = 68719490000 + index * 137 + 5
            is_gift_card = name == "Gift Card"
            variant = not is_gift_card and index % 3 == 1
            product = Product(
                record_id=record_id,
                item_id=item_id,
                name=name,
                description=description,
                base_price=Decimal(price),
                product_type_value=PRODUCT_VARIANT if variant else PRODUCT_STANDALONE,
                master_product_id=record_id - 1 if variant else None,
                is_gift_card=is_gift_card,
            )
            image_count = 0 if is_gift_card or index % 9 == 4 else rng.choice((1, 1, 2, 3))
            without_alt_text = index % 5 == 2
            product.media = [
                MediaItem(
                    uri=f"Products/{item_id}_000_{n:03d}.png",
                    alt_text=None if without_alt_text else f"{name}, view {n}",
                    is_default=n == 1,
                    priority=n,
                )
                for n in range(1, image_count + 1)
            ]
            if index == UNPUBLISHED_MEDIA_INDEX:
                # Decided by position, not drawn, so every other generated value stays the same.
                product.media_published = False
                product.media = []
            self.products[record_id] = product

    def _generate_customers(self) -> None:
        rng = self._rng
        order = list(range(CUSTOMER_COUNT))
        rng.shuffle(order)
        # Fixed shares of each kind, on shuffled positions, so every seed has all of them.
        no_email = set(order[0:6])
        opt_out_personalization = set(order[6:14])
        opt_out_tracking = set(order[10:16])
        blocked = set(order[16:18])
        organizations = set(order[18:21])
        german = set(order[21:36])
        for index in range(CUSTOMER_COUNT):
            account = f"{4001 + index:06d}"
            first = rng.choice(catalog.FIRST_NAMES)
            last = rng.choice(catalog.LAST_NAMES)
            is_org = index in organizations
            name = catalog.COMPANY_NAMES[len(self.customers) % len(catalog.COMPANY_NAMES)] if is_org else ""
            if is_org:
                first, last = "", ""
            else:
                name = f"{first} {last}"
            slug = (name if is_org else f"{first}.{last}").lower().replace(" ", ".").replace("-", "")
            email = None if index in no_email else f"{slug}{index}@example.com"
            phone = f"+1 555 01{index % 100:02d}" if rng.random() < 0.7 else None
            contacts: list[Contact] = []
            if email:
                contacts.append(
                    Contact(CONTACT_EMAIL, email, is_opted_in_marketing=rng.random() < 0.65 or index % 7 == 0)
                )
            if phone:
                contacts.append(Contact(CONTACT_PHONE, phone, is_mobile_phone=rng.random() < 0.5))
            self.customers[account] = Customer(
                account_number=account,
                record_id=22565421000 + index * 3,
                first_name=first,
                last_name=last,
                name=name,
                email=email,
                phone=phone,
                language="de-de" if index in german else "en-us",
                currency_code="EUR" if index in german else "USD",
                customer_type_value=CUSTOMER_ORGANIZATION if is_org else CUSTOMER_PERSON,
                opt_out_personalization=index in opt_out_personalization,
                opt_out_web_activity_tracking=index in opt_out_tracking,
                blocked=index in blocked,
                contacts=contacts,
            )

    def _generate_carts(self) -> None:
        rng = self._rng
        accounts = list(self.customers)
        # A few customers shop a lot, so several carts per customer are common.
        weights = list(itertools.accumulate(5 if i % 6 == 0 else 1 for i in range(len(accounts))))
        self._shelf = [p for p in self.products.values() if not p.is_gift_card]
        for oun, count in REGULAR_CARTS.items():
            channel = self.channels[oun]
            for index in range(count):
                customer = rng.choices(accounts, cum_weights=weights)[0]
                # Half of the carts in the last day, half over the two days before.
                if index % 2 == 0:
                    age_ms = rng.randrange(120_000, 24 * 3_600_000)
                else:
                    age_ms = rng.randrange(24 * 3_600_000, 72 * 3_600_000)
                # Every third cart gets a sub-millisecond part down to the 100 ns tick, taken from
                # its index rather than the generator, so the rest of the data stays as it was.
                sub_ms = (index * 7_919) % 10_000 if index % 3 == 2 else 0
                modified = self.now - timedelta(milliseconds=age_ms) + timedelta(microseconds=sub_ms // 10)
                self._add_generated(channel, customer, modified, rng.random(), extra_100ns=sub_ms % 10)
        block = self.same_instant_block()
        channel = self.channels["128"]
        for index in range(SAME_INSTANT_BLOCK):
            self._add_generated(channel, accounts[index % len(accounts)], block, kind=1.0)

    def _add_generated(
        self, channel: Channel, customer: str, modified: datetime, kind: float, *, extra_100ns: int = 0
    ) -> None:
        rng = self._rng
        cart_type, status, line_count, voided = CART_SHOPPING, STATUS_CREATED, rng.randint(1, 4), False
        if kind < 0.10:
            customer = ""
        elif kind < 0.15:
            line_count = 0
        elif kind < 0.20:
            voided = True
        elif kind < 0.27:
            cart_type = CART_CHECKOUT
        elif kind < 0.29:
            cart_type = CART_CUSTOMER_ORDER
        elif kind < 0.31:
            status = STATUS_VOIDED
        chosen = [(rng.choice(self._shelf), rng.randint(1, 3)) for _ in range(line_count)]
        if line_count and rng.random() < 0.05:
            gift_card = next(p for p in self.products.values() if p.is_gift_card)
            chosen.append((gift_card, 1))
        cart = Cart(
            id=self._cart_id(),
            customer_id=customer,
            channel_id=channel.channel_id,
            cart_type_value=cart_type,
            cart_status_value=status,
            version=rng.randint(1, 12),
            modified_date_time=modified,
            begin_date_time=modified - timedelta(seconds=rng.randrange(0, 3 * 3600)),
            lines=self._lines(channel, chosen, voided=voided, discount_every=4),
            modified_100ns=extra_100ns,
        )
        self.carts[cart.id] = cart

    def _lines(
        self,
        channel: Channel,
        products: Iterable[tuple[Product, int]],
        *,
        voided: bool,
        discount_every: int,
        rng: random.Random | None = None,
    ) -> list[CartLine]:
        lines: list[CartLine] = []
        for number, (product, quantity) in enumerate(products, start=1):
            price = channel.price_of(product)
            qty = Decimal(quantity)
            extended = money(price * qty)
            discount = (
                money(extended * Decimal("0.10"))
                if discount_every and number % discount_every == 0
                else Decimal(0)
            )
            net = extended - discount
            if channel.price_includes_tax:
                tax = money(net - net / (1 + channel.tax_rate))
                net_without_tax, total = net - tax, net
            else:
                tax = money(net * channel.tax_rate)
                net_without_tax, total = net, net + tax
            lines.append(
                CartLine(
                    line_id=self._hex(32, rng),
                    line_number=number,
                    product_id=product.record_id,
                    item_id=product.item_id,
                    description=product.name,
                    quantity=qty,
                    price=price,
                    discount_amount=discount,
                    tax_amount=tax,
                    net_amount_without_tax=net_without_tax,
                    total_amount=total,
                    is_voided=voided,
                    is_gift_card_line=product.is_gift_card,
                )
            )
        return lines

    def _cart_id(self) -> str:
        while True:
            raw = base64.b64encode(self._rng.randbytes(24)).decode("ascii")
            # Alphanumeric like Commerce's cart ids: map the two symbols of base64 onto letters.
            candidate = raw.translate(_ALPHANUMERIC)
            if candidate not in self.carts:
                return candidate

    def _hex(self, length: int, rng: random.Random | None = None) -> str:
        return f"{(rng or self._rng).getrandbits(length * 4):0{length}x}"
