"""Preview: send nothing; write each message as JSON and as an HTML page a marketer can open.

Files are ``<dir>/<dedup key>.json`` and ``<dir>/<dedup key>.html`` (characters other than letters,
digits, ``.``, ``_`` and ``-`` in the key become ``_``). The page comes from the bundled
``templates/abandoned_cart.html``; every value is HTML-escaped and only http(s) links are kept.
Writing happens in a worker thread so the event loop never blocks on the disk.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Mapping, Sequence
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from html import escape
from importlib import resources
from pathlib import Path
from string import Template
from typing import Any

from shared.email.base import EmailMessage, SendResult
from shared.email.jsonbody import to_jsonable

logger = logging.getLogger(__name__)

_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._-]")


def file_stem(dedup_key: str) -> str:
    stem = _UNSAFE_NAME.sub("_", dedup_key)
    return "_" + stem if stem.startswith(".") else stem


@lru_cache(maxsize=1)
def _template() -> Template:
    text = resources.files("shared.email").joinpath("templates/abandoned_cart.html").read_text("utf-8")
    return Template(text)


def _text(value: Any) -> str:
    return escape("" if value is None else str(value), quote=True)


def _url(value: Any) -> str:
    """An escaped http(s) URL, or ``#``: a ``javascript:`` link must not survive into the page."""
    text = str(value or "").strip()
    return escape(text, quote=True) if text.lower().startswith(("https://", "http://")) else "#"


def _money(value: Any, currency: Any) -> str:
    if value is None or value == "":
        return ""
    try:
        amount = f"{Decimal(str(value)):,.2f}"
    except (InvalidOperation, ValueError):
        amount = str(value)
    return _text(f"{amount} {currency}" if currency else amount)


def _picture(product: Mapping[str, Any]) -> str:
    image = product.get("image")
    if not isinstance(image, Mapping):
        return ""
    viewports = [v for v in image.get("viewports") or [] if isinstance(v, Mapping) and v.get("url")]
    if not viewports:
        return ""
    alt = _text(image.get("altText") or product.get("name"))
    default = next((v for v in viewports if v.get("useForDefaultImageTag")), viewports[-1])
    sources = "".join(
        f'<source media="{_text(v.get("media"))}" srcset="{_url(v.get("url"))}">'
        for v in viewports
        if v.get("media")
    )
    size = ""
    if default.get("width") and default.get("height"):
        size = f' width="{_text(default["width"])}" height="{_text(default["height"])}"'
    return f'<picture>{sources}<img src="{_url(default.get("url"))}" alt="{alt}"{size}></picture>'


def _line(product: Mapping[str, Any], currency: Any) -> str:
    name = _text(product.get("name"))
    link = _url(product.get("url"))
    quantity = _text(product.get("quantity"))
    unit = _money(product.get("unitPrice"), currency)
    return (
        "    <tr>"
        f'<td><a href="{link}">{_picture(product)}</a></td>'
        f'<td><a href="{link}">{name}</a><br>Item {_text(product.get("itemId"))}<br>'
        f"{quantity} &times; {unit}</td>"
        f'<td class="amount">{_money(product.get("lineAmount"), currency)}</td>'
        "</tr>"
    )


def render_html(message: EmailMessage) -> str:
    data = message.data
    currency = data.get("currency")
    first_name = data.get("firstName") or message.recipient.first_name
    products = [p for p in data.get("products") or [] if isinstance(p, Mapping)]
    store_link = data.get("storeCommerceLink")
    unsubscribe = data.get("unsubscribeUrl")
    return _template().substitute(
        lang=_text((data.get("language") or message.recipient.language or "en").split("-")[0]),
        title=_text(f"abandoned cart {message.dedup_key}"),
        dedup_key=_text(message.dedup_key),
        recipient=_text(message.recipient.email),
        greeting=_text(f"Hi {first_name}," if first_name else "Hi,"),
        lines="\n".join(_line(p, currency) for p in products),
        subtotal=_money(data.get("subtotal"), currency),
        total=_money(data.get("total"), currency),
        cart_url=_url(data.get("cartUrl")),
        store_link=(f'<a href="{_url(store_link)}">Open in Store Commerce</a>' if store_link else ""),
        unsubscribe=(f'<a href="{_url(unsubscribe)}">Unsubscribe</a>' if unsubscribe else ""),
    )


class PreviewProvider:
    """Never touches the network."""

    name = "preview"
    # Notify records what this provider handled as "previewed", not "sent": no email went out.
    sends_email = False
    # Files are written by dedup key: a repeat overwrites the same preview.
    deduplicates = True

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    async def close(self) -> None:
        return None

    async def send(self, message: EmailMessage) -> SendResult:
        html_path = await asyncio.to_thread(self._write, message)
        logger.info("preview written for %s", message.dedup_key)
        return SendResult(status="sent", provider_ids={"preview": str(html_path)})

    async def send_many(self, messages: Sequence[EmailMessage]) -> list[SendResult]:
        return [await self.send(m) for m in messages]

    def _write(self, message: EmailMessage) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        stem = file_stem(message.dedup_key)
        record = {
            "provider": "preview",
            "dedup_key": message.dedup_key,
            "recipient": message.recipient.model_dump(mode="json"),
            "data": to_jsonable(message.data),
        }
        (self.directory / f"{stem}.json").write_text(
            json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
        )
        html_path = self.directory / f"{stem}.html"
        html_path.write_text(render_html(message), encoding="utf-8")
        return html_path
