"""What an F&O call can end in, as typed errors the customer service maps to HTTP answers.

F&O cannot choose a status from X++: an unhandled exception is always HTTP 500 with a body like
``{"Message": "An exception occured when invoking the operation - <infolog>", "ExceptionType":
"DuplicateKeyException", "ActivityId": "<guid>"}``. Callers only ever see :attr:`FnoError.user_message`,
the infolog part of ``Message``, never the exception type, activity id or stack trace; logs see the
exception type and activity id but never the message, which may quote the customer's data.
"""

from __future__ import annotations

import re
from typing import Any

_INVOKE_PREFIX = re.compile(r"^\s*an exception occ?ur?red when [a-z ]+?\s+-\s*", re.IGNORECASE)
_DUPLICATE = re.compile(r"duplicate|already exists", re.IGNORECASE)
_MAX_MESSAGE = 400


class FnoError(Exception):
    """An F&O call failed. ``str()`` is safe to log: it never holds the upstream message."""

    def __init__(
        self,
        reason: str,
        *,
        status: int | None = None,
        user_message: str | None = None,
        exception_type: str | None = None,
        activity_id: str | None = None,
        correlation_id: str,
        retry_after: float | None = None,
        may_have_created: bool = False,
    ) -> None:
        self.reason = reason
        # True when F&O may have run the operation even though we saw no success: never retry it.
        self.may_have_created = may_have_created
        self.status = status
        self.user_message = user_message
        self.exception_type = exception_type
        self.activity_id = activity_id
        self.correlation_id = correlation_id
        self.retry_after = retry_after
        parts = [reason]
        if status is not None:
            parts.append(f"HTTP {status}")
        if exception_type:
            parts.append(f"exception type {exception_type}")
        if activity_id:
            parts.append(f"activity id {activity_id}")
        super().__init__("F&O: " + ", ".join(parts) + f" [correlation id {correlation_id}]")


class FnoNotConfiguredError(FnoError):
    """No F&O environment URL is set."""


class FnoRejectedError(FnoError):
    """F&O refused the payload (400, or a 200 contract saying ``Success: false``)."""


class FnoDuplicateError(FnoError):
    """F&O refused the customer as a duplicate (a duplicate-key exception)."""


class FnoOperationError(FnoError):
    """The X++ operation threw something other than a duplicate, or answered unreadably."""


class FnoAuthError(FnoError):
    """F&O refused our token (401/403): our Entra app or its F&O mapping is wrong, not the caller."""


class FnoCredentialsError(FnoAuthError):
    """We could not get a token for F&O: the client secret could not be read (missing, Key Vault
    refused), Entra ID refused it or could not be reached at all. Nothing was sent to F&O."""


class FnoCredentialsUnavailableError(FnoError):
    """Our credentials could not be had in time: Key Vault did not answer (or failed transiently)
    within its bounded attempts, Entra ID failed transiently (429, 5xx, a broken connection), or
    getting a token outlasted the call's deadline. Nothing was sent to F&O, and a later try may
    succeed."""


class FnoThrottledError(FnoError):
    """F&O asked us to come back later (429/503) and did not process the request."""


class FnoTimeoutError(FnoError):
    """No answer in time; the customer may or may not have been created."""


class FnoUnavailableError(FnoError):
    """F&O could not be reached, or a gateway in front of it failed."""


def user_facing_message(message: object) -> str | None:
    """The infolog part of an F&O ``Message``: no invoke prefix, first line, bounded length."""
    if not isinstance(message, str) or not message.strip():
        return None
    text = _INVOKE_PREFIX.sub("", message, count=1).strip()
    # Whatever follows the first line is a stack trace or X++ call stack, never meant for users.
    text = text.splitlines()[0].strip() if text else ""
    if not text:
        return None
    return text if len(text) <= _MAX_MESSAGE else text[: _MAX_MESSAGE - 1].rstrip() + "…"


def is_duplicate(exception_type: object, message: object) -> bool:
    """True when F&O's exception type or message says the record exists already.

    ``DuplicateKeyException`` (and the ``...DuplicateKeyException`` of the .NET layer) is the
    reliable signal; partner X++ often throws a plain ``Exception`` with "already exists" in the
    infolog instead, so the message counts as well.
    """
    return any(isinstance(text, str) and _DUPLICATE.search(text) for text in (exception_type, message))


def field_of(body: Any, name: str) -> Any:
    """A top-level field of a JSON object, matched case-insensitively (JSON.NET casing varies)."""
    if not isinstance(body, dict):
        return None
    lowered = name.lower()
    for key, value in body.items():
        if isinstance(key, str) and key.lower() == lowered:
            return value
    return None
