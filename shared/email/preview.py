"""Preview: send nothing; write each message as JSON and as an HTML page a marketer can open.

Files are ``<dir>/<dedup key>.<index>.json`` and ``.html`` (characters other than letters, digits,
``.``, ``_`` and ``-`` in the key become ``_``). ``<index>`` is ``a<16 hex>-e<16 hex>``: the start
of the SHA-256 of the customer account and of the normalised address, so erasure finds a person's
previews from the directory listing alone, without opening any file (:func:`delete_previews`).
The files hold the recipient's address and name: they are written ``0600`` in a ``0700``
directory. The page comes from the bundled ``templates/abandoned_cart.html``; every value is
HTML-escaped and only http(s) links are kept. Disk work happens in a worker thread so the event
loop never blocks on it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import re
import stat
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
_INDEX = re.compile(r"a([0-9a-f]{16})-e([0-9a-f]{16})")
_SUFFIXES = (".json", ".html")
FILE_MODE = 0o600
DIRECTORY_MODE = 0o700


def file_stem(dedup_key: str) -> str:
    stem = _UNSAFE_NAME.sub("_", dedup_key)
    return "_" + stem if stem.startswith(".") else stem


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()[:16]


def recipient_index(customer_id: str, email: str) -> str:
    """The part of a preview's file name that says whose it is, without saying it readably."""
    return f"a{_digest(customer_id)}-e{_digest(email.strip().lower())}"


def delete_previews(directory: Path, *, customer_id: str | None, email: str | None) -> int:
    """Delete the previews of an account or an address (either matches); the number of messages
    whose files went. Blocking: call it in a worker thread."""
    account = _digest(customer_id) if customer_id is not None else None
    address = _digest(email.strip().lower()) if email is not None else None
    if not directory.is_dir():
        return 0
    stems: set[str] = set()
    with os.scandir(directory) as entries:
        for entry in entries:
            base, dot, suffix = entry.name.rpartition(".")
            stem, _, index = base.rpartition(".")
            found = _INDEX.fullmatch(index)
            if not dot or f".{suffix}" not in _SUFFIXES or found is None:
                continue
            if found.group(1) == account or found.group(2) == address:
                Path(entry.path).unlink(missing_ok=True)
                stems.add(f"{stem}.{index}")
    return len(stems)


def _private_directory(directory: Path) -> None:
    """Create ``directory`` as 0700, or tighten one this process owns; a shared directory that
    others may write (sticky, like /tmp) is never changed, only reported."""
    directory.mkdir(mode=DIRECTORY_MODE, parents=True, exist_ok=True)
    if not hasattr(os, "getuid"):
        # Windows: POSIX modes do not exist there; the folder's ACL (a user profile's by default)
        # decides who may read the previews.
        return
    status = directory.stat()
    if stat.S_IMODE(status.st_mode) & 0o077 == 0:
        return
    if status.st_uid == os.getuid() and not status.st_mode & stat.S_ISVTX:
        directory.chmod(DIRECTORY_MODE)
    else:
        logger.warning("PREVIEW_DIR is readable by other users; the preview files in it are 0600")


def _write_private(path: Path, text: str) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    if hasattr(os, "fchmod"):
        # O_CREAT's mode does not apply to a file that existed already.
        os.fchmod(descriptor, FILE_MODE)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(text)


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
        _private_directory(self.directory)
        recipient = message.recipient
        name = (
            f"{file_stem(message.dedup_key)}.{recipient_index(recipient.customer_id, str(recipient.email))}"
        )
        record = {
            "provider": "preview",
            "dedup_key": message.dedup_key,
            "recipient": recipient.model_dump(mode="json"),
            "data": to_jsonable(message.data),
        }
        _write_private(
            self.directory / f"{name}.json", json.dumps(record, indent=2, ensure_ascii=False) + "\n"
        )
        html_path = self.directory / f"{name}.html"
        _write_private(html_path, render_html(message))
        return html_path
