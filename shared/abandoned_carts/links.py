"""Links in the email: product pages, the return-to-cart page and the unsubscribe page.

Pure functions: no settings object, no I/O. Template values are URL-encoded so a cart id with
``+`` or ``/`` (Commerce cart ids are base64-like) cannot change the URL's meaning.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from urllib.parse import quote

_NOT_ALPHANUMERIC = re.compile(r"[^0-9a-z]+")


def slug(name: str) -> str:
    """The product-name part of a Commerce product page URL: "Men's Boat Shoes" -> "men-s-boat-shoes"."""
    return _NOT_ALPHANUMERIC.sub("-", name.lower()).strip("-")


def product_url(site_url: str | None, name: str, record_id: int) -> str | None:
    """``{site}/{name-slug}/{RecordId}.p``; None without a site. A name without letters or digits
    still gives a working URL (Commerce resolves product pages by the record id)."""
    if not site_url:
        return None
    segment = slug(name) or "product"
    return f"{site_url.rstrip('/')}/{segment}/{int(record_id)}.p"


def fill_template(template: str | None, values: Mapping[str, str | int]) -> str | None:
    """Fill ``{name}`` placeholders with URL-encoded values; None when no template is configured.

    Settings validation has already refused unknown placeholders, so a missing value here is a bug.
    """
    if not template:
        return None
    parts: list[str] = []
    for literal, field, _, _ in string.Formatter().parse(template):
        parts.append(literal)
        if field is not None:
            parts.append(quote(str(values[field]), safe=""))
    return "".join(parts)


def uses_placeholder(template: str | None, name: str) -> bool:
    """Whether ``template`` has a ``{name}`` placeholder (so its value need only be made then)."""
    if not template:
        return False
    return any(field == name for _, field, _, _ in string.Formatter().parse(template))
