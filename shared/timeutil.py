"""UTC timestamps with one sortable text form, so stored times compare correctly as strings."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator, PlainSerializer


def ensure_utc(value: datetime) -> datetime:
    if value.tzinfo is UTC:
        return value
    if value.tzinfo is None:
        raise ValueError("timestamp must carry a UTC offset")
    return value.astimezone(UTC)


def sortable(value: datetime) -> str:
    """Fixed-width ISO 8601 in UTC with microseconds: lexical order is time order."""
    # isoformat with a fixed timespec is the same text as strftime("%Y-%m-%dT%H:%M:%S.%f") at a
    # tenth of the cost, and detection formats several timestamps per cart.
    return ensure_utc(value).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


UtcDateTime = Annotated[
    datetime, AfterValidator(ensure_utc), PlainSerializer(sortable, return_type=str, when_used="json")
]


def utcnow() -> datetime:
    return datetime.now(UTC)
