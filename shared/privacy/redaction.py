"""A logging filter that removes personal data and credentials from every record.

It is the safety net behind the rule that code never logs an email, phone number, name, token or
secret: emails, bearer/id tokens, JWTs, ``key=value`` secrets and long digit runs (phone numbers)
are masked in the formatted message before any handler sees it.
"""

from __future__ import annotations

import logging
import re

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*"), "[jwt]"),
    (re.compile(r"(?i)\b(bearer|id_token|basic)\s+[A-Za-z0-9._~+/=-]{8,}"), r"\1 [redacted]"),
    (
        re.compile(
            r"(?i)\b(client_secret|secret|password|api[_-]?key|access_token|refresh_token|sig|code|"
            r"accountkey|sharedaccesssignature)=([^&\s;,\"']+)"
        ),
        r"\1=[redacted]",
    ),
    (re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+"), "[email]"),
)
_PHONE = re.compile(r"(?<![\w.])\+?\d[\d ().-]{7,}\d(?![\w.])")
# Digit runs that are not phone numbers and that an operator needs intact in the logs: UUIDs
# (correlation ids), IPv4 addresses with a port, and ISO dates and timestamps.
_NOT_A_PHONE = re.compile(
    r"\b[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}\b"
    r"|\b\d{1,3}(?:\.\d{1,3}){3}(?::\d{1,5})?\b"
    r"|\b\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:\d{2})?)?"
)


def redact(text: str) -> str:
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    pieces: list[str] = []
    start = 0
    for kept in _NOT_A_PHONE.finditer(text):
        pieces.append(_PHONE.sub("[number]", text[start : kept.start()]))
        pieces.append(kept.group())
        start = kept.end()
    pieces.append(_PHONE.sub("[number]", text[start:]))
    return "".join(pieces)


def _scrub(record: logging.LogRecord) -> None:
    try:
        message = record.getMessage()
    except (TypeError, ValueError):
        return
    record.msg = redact(message)
    record.args = None
    if record.exc_info and record.exc_info[1] is not None:
        # Exception text can quote upstream bodies; keep the type and a redacted message only.
        record.exc_text = redact(f"{type(record.exc_info[1]).__name__}: {record.exc_info[1]}")
        record.exc_info = None


_installed = False


def install() -> None:
    """Redact every log record when it is created, whichever logger or handler it goes to.

    A record factory rather than a filter: filters on the root logger miss records propagated from
    child loggers, and the Functions worker adds its own handler after the app has started.
    """
    global _installed
    if _installed:
        return
    previous = logging.getLogRecordFactory()

    def factory(*args: object, **kwargs: object) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        _scrub(record)
        return record

    logging.setLogRecordFactory(factory)
    _installed = True
