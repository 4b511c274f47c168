"""A logging filter that removes personal data and credentials from every record.

It is the safety net behind the rule that code never logs an email, phone number, name, token or
secret: emails, bearer/id tokens, JWTs, ``key=value`` secrets and long digit runs (phone numbers)
are masked in the formatted message before any handler sees it. Digit runs an operator needs
(correlation ids, addresses, timestamps, and product, channel, record, catalog and item ids named
as such) are kept.
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
    # The lookbehind starts a match only where an address can start, which keeps the scan linear
    # on long runs of word characters (a quoted upstream body, say).
    (
        re.compile(
            r"(?<![A-Za-z0-9.!#$%&'*+/=?^_`{|}~-])[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+"
        ),
        "[email]",
    ),
)
_PHONE = re.compile(r"(?<![\w.])\+?\d[\d ().-]{7,}\d(?![\w.])")
# A Commerce id after the word or key that names it: ``product 68719493156``, ``RecordId 5637...``,
# ``productId=6871...``, ``"channelId": 5637...``. The word is product, channel, record, catalog or
# item (any case, plural too); a key ends in ``Id``, in ``ID`` after a lower-case letter or digit
# (so VOID or PAID are not keys) or in ``_id``. One unbroken digit run only: digits that go on
# after a space, dot, dash or bracket look like a formatted phone number and are not exempt.
_ID_VALUE = (
    r"(?:\b(?i:product|channel|record|catalog|item)s?"
    r"|\b[A-Za-z]\w*?(?:(?<=[A-Za-z0-9])Id|(?<=[a-z0-9])ID|_(?i:id))s?)"
    r"\b[\"']?\s*[:=#]?\s*[\"']?\d+(?![\d]|[ ().-]\d)"
)
# Digit runs that are not phone numbers and that an operator needs intact in the logs: UUIDs
# (correlation ids), IPv4 addresses with a port, ISO dates and timestamps, and named ids.
_NOT_A_PHONE = re.compile(
    r"\b[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}\b"
    r"|\b\d{1,3}(?:\.\d{1,3}){3}(?::\d{1,5})?\b"
    r"|\b\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:\d{2})?)?"
    r"|" + _ID_VALUE
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
