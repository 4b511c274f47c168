"""The abandoned-cart email's data: one pydantic model, serialised with camelCase keys into
``EmailMessage.data`` (what ``{{event.firstName}}`` and ``{% foreach p in event.products %}`` read
in an Emarsys template, and what the preview renders). Money stays ``Decimal`` and is written as an
exact string.
"""

from __future__ import annotations

import hashlib
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_serializer
from pydantic.alias_generators import to_camel

from shared.abandoned_carts.images import ImageSet

_DEDUP_PREFIX = "ac"
_CENT = Decimal("0.01")


def money_text(value: Decimal) -> str:
    """Amounts as a template prints them: two decimals ("49.50"), never float noise."""
    return str(value.quantize(_CENT))


def quantity_text(value: Decimal) -> str:
    """Quantities without trailing zeros ("3", "1.5"), not Retail Server's "3.0"."""
    return format(value.normalize(), "f")


_MAX_DEDUP_KEY = 128


class _Camel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True)


class ViewportImageData(_Camel):
    media: str
    url: str
    width: int
    height: int
    use_for_default_image_tag: bool


class ProductImageData(_Camel):
    alt_text: str
    is_default: bool
    viewports: list[ViewportImageData]

    @classmethod
    def of(cls, images: ImageSet | None) -> ProductImageData | None:
        if images is None:
            return None
        return cls(
            alt_text=images.alt_text,
            is_default=images.is_default,
            viewports=[
                ViewportImageData(
                    media=v.media,
                    url=v.url,
                    width=v.width,
                    height=v.height,
                    use_for_default_image_tag=v.use_for_default_image_tag,
                )
                for v in images.viewports
            ],
        )


class ProductLine(_Camel):
    product_id: int
    item_id: str | None
    name: str
    quantity: Decimal
    unit_price: Decimal
    line_amount: Decimal
    url: str | None
    image: ProductImageData | None

    @field_serializer("unit_price", "line_amount", when_used="json")
    def _money(self, value: Decimal) -> str:
        return money_text(value)

    @field_serializer("quantity", when_used="json")
    def _quantity(self, value: Decimal) -> str:
        return quantity_text(value)


class AbandonedCartPayload(_Camel):
    cart_id: str
    cart_version: int
    step: int
    oun: str
    channel_id: int
    customer_id: str
    first_name: str | None
    last_name: str | None
    email: str
    language: str | None
    currency: str
    cart_url: str | None
    products: list[ProductLine] = Field(min_length=1)
    subtotal: Decimal
    total: Decimal
    store_commerce_link: str | None = None
    # Lines left out of the Store Commerce link to keep it under 2,048 characters (cheapest first).
    store_commerce_link_omitted_products: list[int] = Field(default_factory=list)
    unsubscribe_url: str | None = None

    @field_serializer("subtotal", "total", when_used="json")
    def _money(self, value: Decimal) -> str:
        return money_text(value)

    def data(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)


def dedup_key(cart_id: str, cart_version: int, step: int) -> str:
    """Deterministic per (cart id, version, step): the provider's de-duplication key (Emarsys
    ``trigger_id``). Long or unusual cart ids are hashed so the key stays short and plain."""
    key = f"{_DEDUP_PREFIX}-{cart_id}-{cart_version}-{step}"
    if len(key) <= _MAX_DEDUP_KEY and all(c.isalnum() or c in "-_" for c in cart_id):
        return key
    digest = hashlib.sha256(cart_id.encode("utf-8")).hexdigest()[:40]
    return f"{_DEDUP_PREFIX}-h{digest}-{cart_version}-{step}"
