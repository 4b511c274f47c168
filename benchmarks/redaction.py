"""The log redaction on adversarial text: the patterns before the linear-time rewrite (kept here
as the baseline) against ``shared.privacy.redaction`` now.

Every log record goes through ``redact``. Before, several patterns backtracked over the rest of
the text from every position where a match could start, so their time grew with the square of the
length: 48 KB of ``" 1."`` took 8 s. The old patterns are measured at 8 and 16 KiB only (1 MB would
take hours) and their 1 MB time is extrapolated from the growth between the two; the current
``redact`` is measured on the full 1 MB (it cuts the message to 16 KiB first) and on the same
16 KiB text as the old one, so the two columns compare like with like.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from typing import Any

from shared.privacy.redaction import MAX_MESSAGE_CHARS, redact

MEGABYTE = 1 << 20
SMALL, LARGE = 8 * 1024, 16 * 1024

# ----- the baseline: shared/privacy/redaction.py as it was before the rewrite (commit 4f75036)

_OLD_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*"), "[jwt]"),
    (re.compile(r"(?i)\b(bearer|id_token|basic)\s+[A-Za-z0-9._~+/=-]{8,}"), r"\1 [redacted]"),
    (
        re.compile(
            r"(?i)\b(client_secret|secret|password|api[_-]?key|access_token|refresh_token|sig|code|"
            r"accountkey|sharedaccesssignature)=([^&\s;,\"']+)"
        ),
        r"\1=[redacted]",
    ),
    (
        re.compile(
            r"(?<![A-Za-z0-9.!#$%&'*+/=?^_`{|}~-])[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+"
        ),
        "[email]",
    ),
)
_OLD_PHONE = re.compile(r"(?<![\w.])\+?\d[\d ().-]{7,}\d(?![\w.])")
_OLD_ID_VALUE = (
    r"(?:\b(?i:product|channel|record|catalog|item)s?"
    r"|\b[A-Za-z]\w*?(?:(?<=[A-Za-z0-9])Id|(?<=[a-z0-9])ID|_(?i:id))s?)"
    r"\b[\"']?\s*[:=#]?\s*[\"']?\d+(?![\d]|[ ().-]\d)"
)
_OLD_NOT_A_PHONE = re.compile(
    r"\b[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}\b"
    r"|\b\d{1,3}(?:\.\d{1,3}){3}(?::\d{1,5})?\b"
    r"|\b\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:\d{2})?)?"
    r"|" + _OLD_ID_VALUE
)


def old_redact(text: str) -> str:
    for pattern, replacement in _OLD_PATTERNS:
        text = pattern.sub(replacement, text)
    pieces: list[str] = []
    start = 0
    for kept in _OLD_NOT_A_PHONE.finditer(text):
        pieces.append(_OLD_PHONE.sub("[number]", text[start : kept.start()]))
        pieces.append(kept.group())
        start = kept.end()
    pieces.append(_OLD_PHONE.sub("[number]", text[start:]))
    return "".join(pieces)


# ----- adversarial text, one per pattern: what makes it try a long stretch from every position


def _repeat(unit: str) -> Callable[[int], str]:
    # Whole units only: a text ending in half a unit can end in a match, which the old patterns
    # then find in one pass.
    return lambda size: unit * (size // len(unit))


ADVERSARIAL: dict[str, Callable[[int], str]] = {
    "phone": _repeat(" 1."),
    "jwt": _repeat("eyJ"),
    "bearer": _repeat("bearer "),
    "secret": _repeat("secret="),
    "email": lambda size: "a@" + "a." * ((size - 2) // 2),
    "id_word_then_spaces": lambda size: "productId" + " " * (size - 9),
    "digits": _repeat("1-"),
    "timestamp": lambda size: "2026-12-01T20:06:43." + "1" * (size - 20),
}


def _seconds(function: Callable[[str], str], text: str) -> float:
    """The best of as many runs as fit in a quarter of a second (at least one)."""
    best, spent = math.inf, 0.0
    while spent < 0.25 or best == math.inf:
        started = time.perf_counter()
        function(text)
        took = time.perf_counter() - started
        best, spent = min(best, took), spent + took
    return best


def _extrapolated(small: float, large: float, target: int) -> tuple[float, float]:
    """The growth exponent between SMALL and LARGE, and the time at ``target`` it implies."""
    exponent = max(1.0, math.log(max(large, 1e-6) / max(small, 1e-6), LARGE / SMALL))
    return exponent, large * (target / LARGE) ** exponent


def measure() -> dict[str, Any]:
    cases: dict[str, Any] = {}
    after_total = 0.0
    for name, make in ADVERSARIAL.items():
        small_text, large_text, megabyte = make(SMALL), make(LARGE), make(MEGABYTE)
        before_small, before_large = _seconds(old_redact, small_text), _seconds(old_redact, large_text)
        exponent, before_megabyte = _extrapolated(before_small, before_large, MEGABYTE)
        after_large = _seconds(redact, large_text)
        after_megabyte = _seconds(redact, megabyte)
        after_total += after_megabyte
        cases[name] = {
            "before_16k_ms": round(before_large * 1000, 2),
            "before_growth_exponent": round(exponent, 2),
            "before_1mb_extrapolated_s": round(before_megabyte, 1),
            "after_16k_ms": round(after_large * 1000, 2),
            "after_1mb_ms": round(after_megabyte * 1000, 2),
        }
    problems = [
        f"{name}: redact kept {len(kept)} characters of 1 MB"
        for name, make in ADVERSARIAL.items()
        if len(kept := redact(make(MEGABYTE))) > MAX_MESSAGE_CHARS + 64
    ]
    return {
        # The figure compared with the baseline target: the current redact on every 1 MB text.
        "seconds": round(after_total, 3),
        "text_bytes": MEGABYTE,
        "cases": cases,
        "problems": problems,
    }
