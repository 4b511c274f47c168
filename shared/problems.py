"""RFC 9457 problem details: the body of every error answer of the HTTP functions.

:func:`problem_from_validation_error` turns a pydantic error into one entry per bad field, with the
field's path in wire names (``Customer.BillingAddress[0].CountryCode``) and a message that never
quotes the rejected value: a bad email or phone number must not come back in the answer (nor land
in a log that records it). Messages are built from pydantic's own text, which describes the rule,
and are scrubbed of anything that still looks like an email address or phone number.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any, Final

import azure.functions as func
from pydantic import BaseModel, ConfigDict, Field, ValidationError

PROBLEM_CONTENT_TYPE: Final = "application/problem+json"
VALIDATION_PROBLEM_TYPE: Final = "urn:d365-commerce-connector:problem:validation"
_ROOT_PATH: Final = ""
_REDACTED: Final = "[redacted]"

# A path segment is echoed only when it looks like a field name; anything else (a client could
# send personal data as a key) is replaced.
_FIELD_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]{0,63}")
_UNNAMED_FIELD: Final = "<unrecognised name>"
# Bounded, so a long message cannot make them backtrack from every position (invariant 11).
_EMAIL_LIKE = re.compile(r"[^\s'\"<>()]{1,64}@[^\s'\"<>()]{1,255}")
_PHONE_LIKE = re.compile(r"\+?\d[\d\s().\-]{5,24}\d")
_UUID = re.compile(r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}")

# Messages for pydantic's own error types where its text is unclear or could carry the input.
_MESSAGES: Final[Mapping[str, str]] = {
    "extra_forbidden": "unknown field; it is not part of the request (names are case-sensitive)",
    "missing": "required field is missing",
    "json_invalid": "the body is not valid JSON",
    "json_type": "the body must be a JSON document",
    "model_type": "must be a JSON object",
    "model_attributes_type": "must be a JSON object",
    "dict_type": "must be a JSON object",
    "list_type": "must be a JSON array",
    "string_type": "must be a JSON string",
    "int_type": "must be a whole number",
    "int_parsing": "must be a whole number",
    "int_from_float": "must be a whole number",
    "decimal_parsing": "must be a number",
    "decimal_type": "must be a number",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "string_pattern_mismatch": "has the wrong format",
    "assertion_error": "is not valid",
}


class FieldError(BaseModel):
    """One bad field: where it is (wire names) and what is wrong with it."""

    model_config = ConfigDict(frozen=True)

    path: str
    message: str


class Problem(BaseModel):
    """An ``application/problem+json`` body. ``errors`` is always present, empty when not about fields."""

    model_config = ConfigDict(validate_by_name=True, validate_by_alias=True, frozen=True)

    type: str = "about:blank"
    title: str
    status: int = Field(ge=400, le=599)
    detail: str | None = None
    instance: str | None = None
    correlation_id: str = Field(alias="correlationId")
    errors: list[FieldError] = Field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json", by_alias=True, exclude_none=True))


def problem(
    status: int,
    *,
    correlation_id: str,
    detail: str | None = None,
    title: str | None = None,
    problem_type: str = "about:blank",
    instance: str | None = None,
    errors: Sequence[FieldError] = (),
) -> Problem:
    """A problem whose title defaults to the status phrase, as RFC 9457 asks for ``about:blank``.

    ``instance`` defaults to ``urn:uuid:<correlation id>`` when the correlation id is a UUID (the
    connector makes one when the caller sends none), naming this occurrence; otherwise it is left
    out, as a caller's own id need not be a URI.
    """
    return Problem(
        type=problem_type,
        title=title or HTTPStatus(status).phrase,
        status=status,
        detail=detail,
        instance=instance if instance is not None else instance_for(correlation_id),
        correlation_id=correlation_id,
        errors=list(errors),
    )


def instance_for(correlation_id: str) -> str | None:
    """``urn:uuid:<id>`` (RFC 9562, lower case) for a correlation id in the UUID form, else None."""
    if not _UUID.fullmatch(correlation_id):
        return None
    return f"urn:uuid:{correlation_id.lower()}"


def wire_path(loc: Sequence[str | int]) -> str:
    """``("Customer", "BillingAddress", 0, "CountryCode")`` -> ``Customer.BillingAddress[0].CountryCode``."""
    path = _ROOT_PATH
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
            continue
        name = part if _FIELD_NAME.fullmatch(part) else _UNNAMED_FIELD
        path = f"{path}.{name}" if path else name
    return path


def safe_message(error: Mapping[str, Any]) -> str:
    """The rule an error broke, in words that cannot carry the rejected value."""
    kind = str(error.get("type", ""))
    if kind in _MESSAGES:
        return _MESSAGES[kind]
    message = str(error.get("msg", "is not valid"))
    if kind == "value_error":
        message = message.removeprefix("Value error, ")
    # Our own errors are written not to quote the input, and pydantic's text for the remaining
    # types states the rule; the scrubbing below is the second line of defence.
    message = _EMAIL_LIKE.sub(_REDACTED, message)
    message = _PHONE_LIKE.sub(_REDACTED, message)
    value = error.get("input")
    if isinstance(value, str) and len(value.strip()) >= 3 and value.strip() in message:
        message = message.replace(value.strip(), _REDACTED)
    return message


def problem_from_validation_error(
    exc: ValidationError,
    *,
    correlation_id: str,
    status: int = 400,
    title: str = "The request is not valid",
    instance: str | None = None,
) -> Problem:
    """A problem listing every bad field of ``exc`` with its wire path and a message free of its value."""
    errors = [
        FieldError(path=wire_path(error["loc"]), message=safe_message(error))
        for error in exc.errors(include_url=False, include_context=False, include_input=True)
    ]
    count = len(errors)
    return problem(
        status,
        correlation_id=correlation_id,
        title=title,
        problem_type=VALIDATION_PROBLEM_TYPE,
        detail=f"The request has {count} error{'s' if count != 1 else ''}, listed under errors by path.",
        instance=instance,
        errors=errors,
    )


def problem_response(problem: Problem, *, headers: Mapping[str, str] | None = None) -> func.HttpResponse:
    """The problem as an HTTP answer: its status, ``application/problem+json``, never cached."""
    all_headers = {"Cache-Control": "no-store", **(headers or {})}
    return func.HttpResponse(
        body=problem.to_json(),
        status_code=problem.status,
        mimetype=PROBLEM_CONTENT_TYPE,
        charset="utf-8",
        headers=all_headers,
    )
