"""JSON from outside (request bodies, queue messages) with its nesting bounded before it is parsed.

``json.loads`` recurses once per nested array or object: ``"[" * 1000`` ends in a
``RecursionError``, which is not a ``ValueError``, so it escaped the callers' "not JSON" handling
and became a 500 (or a queue message that raised instead of going to the poison queue). No input
of the connector nests deeper than a few levels, so a document deeper than ``MAX_JSON_DEPTH`` is
refused before the parser sees it.
"""

from __future__ import annotations

import json
import re
from typing import Any, Final

MAX_JSON_DEPTH: Final = 32
# The characters that open or close a level, start or end a string, or escape inside one.
_SIGNIFICANT = re.compile(r'[\[\]{}"\\]')


class JsonTooDeepError(ValueError):
    """The document nests arrays and objects deeper than allowed; it was not parsed."""

    def __init__(self, max_depth: int) -> None:
        super().__init__(f"arrays and objects are nested deeper than {max_depth} levels")
        self.max_depth = max_depth


def nesting_exceeds(text: str, max_depth: int) -> bool:
    """Whether ``text`` opens more than ``max_depth`` arrays or objects at once (strings skipped).

    One pass over the structural characters; the text need not be valid JSON.
    """
    if text.count("[") + text.count("{") <= max_depth:
        return False
    depth = 0
    in_string = False
    escaped_at = -1
    for match in _SIGNIFICANT.finditer(text):
        at, char = match.start(), match.group()
        if in_string:
            if at == escaped_at:
                continue
            if char == "\\":
                escaped_at = at + 1
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > max_depth:
                return True
        elif char in "]}":
            depth -= 1
    return False


def loads(text: str, *, max_depth: int = MAX_JSON_DEPTH, **kwargs: Any) -> Any:
    """``json.loads(text, **kwargs)``, refusing a document nested deeper than ``max_depth`` with
    :class:`JsonTooDeepError` (a ``ValueError``, as the parser's own errors are)."""
    if nesting_exceeds(text, max_depth):
        raise JsonTooDeepError(max_depth)
    return json.loads(text, **kwargs)
