"""UTC timestamps with one sortable text form, so stored times compare correctly as strings."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator, PlainSerializer


def ensure_utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("timestamp must carry a UTC offset")
    return value.astimezone(UTC)


def sortable(value: datetime) -> str:
    """Fixed-width ISO 8601 in UTC with microseconds: lexical order is time order."""
    return ensure_utc(value).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


UtcDateTime = Annotated[
    datetime, AfterValidator(ensure_utc), PlainSerializer(sortable, return_type=str, when_used="json")
]


def utcnow() -> datetime:
    return datetime.now(UTC)
