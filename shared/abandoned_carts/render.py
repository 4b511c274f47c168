"""Render: the email of one cart from what the look-ups found (the payload and the recipient).

Optional data degrades, required data fails (DESIGN invariant 8): a product without its media
locations keeps its primary image, without alt text, and a Store Commerce link that cannot be
built is left out; both are named in ``degraded``. A cart none of whose products was found, or a
recipient the provider could not address, is skipped.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from pydantic import ValidationError

from shared.abandoned_carts.enrich import CartCatalog
from shared.abandoned_carts.images import image_set
from shared.abandoned_carts.links import fill_template, product_url
from shared.abandoned_carts.notify_config import NotifyConfig
from shared.abandoned_carts.payload import AbandonedCartPayload, ProductImageData, ProductLine, dedup_key
from shared.email.base import EmailMessage, ProviderConfigurationError, Recipient
from shared.privacy.tokens import WeakSecretError, token_for
from shared.retail_server.models import Cart, CartLine, Customer
from shared.secrets import SecretSource
from shared.state.ledger import LedgerEntry
from shared.store_commerce import DeepLinkError, PricedItem, build_create_transaction_link

logger = logging.getLogger(__name__)

# Optional parts of the email, named in ``degraded`` when their look-up failed.
DEGRADED_IMAGES = "images"
DEGRADED_STORE_COMMERCE_LINK = "store_commerce_link"


class RenderSkipError(Exception):
    """The cart cannot make an email (a skip reason, not a failure)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


@dataclass(frozen=True)
class Rendered:
    message: EmailMessage
    degraded: tuple[str, ...]


class Renderer:
    def __init__(self, config: NotifyConfig, secrets: SecretSource | None) -> None:
        self._config = config
        # Only needed when UNSUBSCRIBE_URL_TEMPLATE uses {unsubscribeToken}.
        self._secrets = secrets

    async def render(
        self,
        entry: LedgerEntry,
        cart: Cart,
        customer: Customer,
        email: str,
        catalog: CartCatalog,
        now: datetime,
    ) -> Rendered:
        payload, degraded = await self._payload(entry, cart, customer, email, catalog, now)
        try:
            recipient = Recipient(
                email=email,
                first_name=customer.first_name or None,
                last_name=customer.last_name or None,
                language=payload.language,
                customer_id=customer.account_number,
            )
        except ValidationError:
            raise RenderSkipError("invalid_email") from None
        message = EmailMessage(
            dedup_key=dedup_key(entry.cart_id, entry.cart_version, entry.step),
            recipient=recipient,
            data=payload.data(),
        )
        return Rendered(message, degraded)

    async def _payload(
        self,
        entry: LedgerEntry,
        cart: Cart,
        customer: Customer,
        email: str,
        catalog: CartCatalog,
        now: datetime,
    ) -> tuple[AbandonedCartPayload, tuple[str, ...]]:
        """The email's data, and the optional parts it goes without because their look-up failed."""
        degraded: list[str] = []
        if any(found is None for found in catalog.media.values()):
            degraded.append(DEGRADED_IMAGES)
        product_lines = [
            line
            for line in (
                self._line(entry, cart_line, catalog)
                for cart_line in cart.active_lines
                if cart_line.product_id is not None
            )
            if line is not None
        ]
        if not product_lines:
            raise RenderSkipError("no_products_found")
        link, omitted = self._store_commerce_link(entry, product_lines)
        if link is None:
            degraded.append(DEGRADED_STORE_COMMERCE_LINK)
        values: dict[str, str | int] = {
            "cartId": cart.id,
            "oun": entry.oun,
            "channelId": catalog.channel_id,
            "customerId": customer.account_number,
        }
        if self._config.unsubscribe_needs_token:
            values["unsubscribeToken"] = await self._unsubscribe_token(email, now)
        subtotal = cart.subtotal_amount
        if subtotal is None:
            subtotal = sum((p.line_amount for p in product_lines), Decimal(0))
        payload = AbandonedCartPayload(
            cart_id=cart.id,
            cart_version=cart.version,
            step=entry.step,
            oun=entry.oun,
            channel_id=catalog.channel_id,
            customer_id=customer.account_number,
            first_name=customer.first_name or None,
            last_name=customer.last_name or None,
            email=email,
            language=customer.language or catalog.channel.default_language_id,
            currency=catalog.channel.currency,
            cart_url=fill_template(self._config.return_to_cart_url_template, values),
            products=product_lines,
            subtotal=subtotal,
            total=cart.total_amount if cart.total_amount is not None else subtotal,
            store_commerce_link=link,
            store_commerce_link_omitted_products=omitted,
            unsubscribe_url=fill_template(self._config.unsubscribe_url_template, values),
        )
        return payload, tuple(degraded)

    def _line(self, entry: LedgerEntry, line: CartLine, catalog: CartCatalog) -> ProductLine | None:
        assert line.product_id is not None
        product = catalog.products.get(line.product_id)
        if product is None:
            logger.warning(
                "cart %s: product %d not found on channel %s; its line is left out",
                entry.cart_id,
                line.product_id,
                entry.oun,
            )
            return None
        name = product.name or line.description or product.item_id or str(product.record_id)
        images = image_set(
            # Without its media locations (the look-up failed) the product's primary image,
            # if Products/GetByIds gave one, still serves, without its alt text.
            media=catalog.media.get(product.record_id) or [],
            primary_image_url=product.primary_image_url,
            product_name=name,
            base_url=self._config.image_base_url,
            viewports=self._config.viewports,
        )
        return ProductLine(
            product_id=product.record_id,
            item_id=line.item_id or product.item_id,
            name=name,
            quantity=line.quantity,
            unit_price=line.price,
            line_amount=(
                line.extended_price if line.extended_price is not None else line.price * line.quantity
            ),
            url=product_url(self._config.site_url, name, product.record_id),
            image=ProductImageData.of(images),
        )

    async def _unsubscribe_token(self, email: str, now: datetime) -> str:
        if self._secrets is None:
            raise ProviderConfigurationError(
                "UNSUBSCRIBE_URL_TEMPLATE uses {unsubscribeToken} but notify has no secret source"
            )
        name = self._config.unsubscribe_signing_secret_name
        secret = await self._secrets.get(name)
        try:
            return token_for(email, secret=secret, now=now, days=self._config.unsubscribe_link_days)
        except WeakSecretError as exc:
            raise ProviderConfigurationError(
                f"secret {name!r} (UNSUBSCRIBE_SIGNING_SECRET_NAME): {exc}"
            ) from None

    @staticmethod
    def _store_commerce_link(entry: LedgerEntry, lines: list[ProductLine]) -> tuple[str | None, list[int]]:
        items = [
            PricedItem(product_id=line.product_id, quantity=line.quantity, unit_price=line.unit_price)
            for line in lines
            if line.quantity > 0
        ]
        try:
            built = build_create_transaction_link(entry.customer_id, items)
        except (DeepLinkError, ValidationError) as exc:
            # Optional: the email goes without it (degraded), never fails for it.
            logger.warning("cart %s: no Store Commerce link (%s)", entry.cart_id, type(exc).__name__)
            return None, []
        return built.url, built.dropped_product_ids
