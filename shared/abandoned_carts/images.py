"""Responsive product images through the Commerce image resizer.

One URL per configured viewport: ``{IMAGE_BASE_URL}{relative path}`` plus the resizer's ``w``,
``h``, ``q=80``, ``m=6`` (facial crop, what Commerce's own cart-line images use) and ``f=jpg``.
Absolute ``http(s)`` image URLs point at some other host whose resizer we cannot assume: they are
used unchanged. The base URL often ends in a query (``.../imageFileData/search?fileName=/``), in
which case the path is a query value and is encoded as one (``Products%2F91005_000_001.png``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from shared.retail_server.models import MediaLocation

QUALITY = 80
MODE_FACIAL_CROP = 6
FORMAT = "jpg"


@dataclass(frozen=True)
class Viewport:
    media: str
    width: int
    height: int
    default: bool

    @classmethod
    def from_setting(cls, value: dict[str, Any]) -> Viewport:
        return cls(
            media=str(value["media"]),
            width=int(value["width"]),
            height=int(value["height"]),
            default=bool(value.get("default", False)),
        )


@dataclass(frozen=True)
class ViewportImage:
    media: str
    url: str
    width: int
    height: int
    use_for_default_image_tag: bool


@dataclass(frozen=True)
class ImageSet:
    alt_text: str
    is_default: bool
    viewports: list[ViewportImage]


def is_absolute(uri: str) -> bool:
    return uri.lower().startswith(("http://", "https://"))


def join_base(base_url: str, path: str) -> str:
    """Base and relative path with exactly one ``/`` between them, never ``//``; the path is
    encoded for where it lands (a query value such as ``fileName=/...``, or a URL path)."""
    separator = "" if base_url.endswith("/") else "/"
    relative = path.strip().lstrip("/")
    return base_url + separator + quote(relative, safe="" if "?" in base_url else "/")


def resized_url(base_url: str | None, uri: str, width: int, height: int) -> str | None:
    if is_absolute(uri):
        return uri
    if not base_url:
        return None
    url = join_base(base_url, uri)
    separator = "&" if "?" in url else "?"
    return f"{url}{separator}w={width}&h={height}&q={QUALITY}&m={MODE_FACIAL_CROP}&f={FORMAT}"


def choose_media(media: Sequence[MediaLocation]) -> MediaLocation | None:
    """The product's default image, else the one with the best (lowest) priority, else the first."""
    usable = [m for m in media if m.uri.strip()]
    if not usable:
        return None
    defaults = [m for m in usable if m.is_default]
    if defaults:
        return defaults[0]
    return min(usable, key=lambda m: (m.priority is None, m.priority or 0))


def image_set(
    *,
    media: Sequence[MediaLocation],
    primary_image_url: str | None,
    product_name: str,
    base_url: str | None,
    viewports: Sequence[Viewport],
) -> ImageSet | None:
    """The product's picture at every viewport size, or None when it has no usable image."""
    chosen = choose_media(media)
    if chosen is not None:
        uri, alt, is_default = chosen.uri, chosen.alt_text, chosen.is_default
    elif primary_image_url:
        uri, alt, is_default = primary_image_url, None, True
    else:
        return None
    images: list[ViewportImage] = []
    for viewport in viewports:
        url = resized_url(base_url, uri, viewport.width, viewport.height)
        if url is None:
            return None
        images.append(
            ViewportImage(
                media=viewport.media,
                url=url,
                width=viewport.width,
                height=viewport.height,
                use_for_default_image_tag=viewport.default,
            )
        )
    return ImageSet(alt_text=(alt or "").strip() or product_name, is_default=is_default, viewports=images)
