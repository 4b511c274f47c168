"""A logging filter that removes personal data and credentials from every record.

It is the safety net behind the rule that code never logs an email, phone number, name, token or
secret: emails, bearer/id tokens, JWTs, ``key=value`` secrets and long digit runs (phone numbers)
are masked in the formatted message before any handler sees it. Digit runs an operator needs
(correlation ids, addresses, timestamps, and product, channel, record, catalog and item ids named
as such) are kept. A message longer than 16 KiB is cut, and marked as cut, before it is scanned.
"""

from __future__ import annotations

import logging
import re

# Every regular expression below runs in linear time: each quantifier has an upper bound, and a
# match can only start where the value it looks for can start, so no text makes the engine try
# a long stretch again from every position (invariant 11). A message longer than
# MAX_MESSAGE_CHARS is cut before any of them runs, so the work per log record is bounded too.
MAX_MESSAGE_CHARS = 16 * 1024
# The longest value a pattern must see whole: a token, a secret, a JWT segment. Longer values are
# masked up to this length; a message is never longer anyway.
_LONG = MAX_MESSAGE_CHARS
# A cut message ends before the word the cut falls in, looked for this far back.
_CUT_BACK = 320
_B64URL = r"[A-Za-z0-9_-]"
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (
        re.compile(
            rf"(?<!{_B64URL})eyJ{_B64URL}{{8,{_LONG}}}\.{_B64URL}{{8,{_LONG}}}\.{_B64URL}{{0,{_LONG}}}"
        ),
        "[jwt]",
    ),
    (
        re.compile(rf"(?i)\b(bearer|id_token|basic)\s{{1,16}}[A-Za-z0-9._~+/=-]{{8,{_LONG}}}"),
        r"\1 [redacted]",
    ),
    (
        re.compile(
            r"(?i)\b(client_secret|secret|password|api[_-]?key|access_token|refresh_token|sig|code|"
            rf"accountkey|sharedaccesssignature)=([^&\s;,\"']{{1,{_LONG}}})"
        ),
        r"\1=[redacted]",
    ),
    # RFC 5321 limits: a local part of 64 characters, labels of 63. The local part is not anchored
    # to the start of a run, so an address at the end of a long URL or body is still found.
    (
        re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63}){1,8}"),
        "[email]",
    ),
)
# E.164 numbers have at most 15 digits; with spaces, dots, dashes and brackets 26 characters hold any
# formatted number.
_PHONE = re.compile(r"(?<![\w.])\+?\d[\d ().-]{7,24}\d(?![\w.])")
# A Commerce id after the word or key that names it: ``product 68719493156``, ``RecordId 5637...``,
# ``productId=6871...``, ``"channelId": 5637...``. The word is product, channel, record, catalog or
# item (any case, plural too); a key ends in ``Id``, in ``ID`` after a lower-case letter or digit
# (so VOID or PAID are not keys) or in ``_id``. One unbroken digit run only: digits that go on
# after a space, dot, dash or bracket look like a formatted phone number and are not exempt.
_ID_VALUE = (
    r"(?:\b(?i:product|channel|record|catalog|item)s?"
    r"|\b[A-Za-z]\w{0,62}?(?:(?<=[A-Za-z0-9])Id|(?<=[a-z0-9])ID|_(?i:id))s?)"
    r"\b[\"']?\s{0,8}[:=#]?\s{0,8}[\"']?\d{1,32}(?![\d]|[ ().-]\d)"
)
# Digit runs that are not phone numbers and that an operator needs intact in the logs: UUIDs
# (correlation ids), IPv4 addresses with a port, ISO dates and timestamps, and named ids.
_NOT_A_PHONE = re.compile(
    r"\b[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}\b"
    r"|\b\d{1,3}(?:\.\d{1,3}){3}(?::\d{1,5})?\b"
    r"|\b\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?(?:Z|[+-]\d{2}:\d{2})?)?"
    r"|" + _ID_VALUE
)
ALL_PATTERNS: tuple[re.Pattern[str], ...] = (*(p for p, _ in _PATTERNS), _PHONE, _NOT_A_PHONE)


def redact(text: str) -> str:
    """``text`` with personal data and credentials masked, cut to MAX_MESSAGE_CHARS (and marked)."""
    head, cut = _bounded(text)
    for pattern, replacement in _PATTERNS:
        head = pattern.sub(replacement, head)
    pieces: list[str] = []
    start = 0
    for kept in _NOT_A_PHONE.finditer(head):
        pieces.append(_PHONE.sub("[number]", head[start : kept.start()]))
        pieces.append(kept.group())
        start = kept.end()
    pieces.append(_PHONE.sub("[number]", head[start:]))
    if cut:
        pieces.append(f" [truncated: {cut} more characters]")
    return "".join(pieces)


def _bounded(text: str) -> tuple[str, int]:
    """At most MAX_MESSAGE_CHARS of ``text``, and how many characters were left out."""
    if len(text) <= MAX_MESSAGE_CHARS:
        return text, 0
    head = text[:MAX_MESSAGE_CHARS]
    # A value cut in two may no longer be recognised (an address without its domain, say), so the
    # head ends before the word the cut falls in; in a long run without spaces, before its last @.
    tail = head[-_CUT_BACK:]
    back = max(tail.rfind(space) for space in " \t\r\n")
    if back < 0:
        back = tail.rfind("@")
    if back >= 0:
        head = head[: len(head) - len(tail) + back]
    return head, len(text) - len(head)


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
