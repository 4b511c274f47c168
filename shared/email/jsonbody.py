"""Compact JSON request bodies whose exact size is known before sending (batch limits are in bytes)."""

from __future__ import annotations

import json
from datetime import date, datetime
from decimal import Decimal
from typing import Any

JSON_HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}


def _default(value: object) -> Any:
    # Money stays exact: templates print the string as it is.
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=_default).encode("utf-8")


def to_jsonable(value: Any) -> Any:
    """The value as plain JSON types (Decimal as string), e.g. to write or sign it."""
    return json.loads(dumps(value))
