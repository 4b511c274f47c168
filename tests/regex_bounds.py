"""The structural proof that a regular expression cannot backtrack without limit: its quantifiers."""

from __future__ import annotations

import re
from re import _constants, _parser  # type: ignore[attr-defined]

# The upper bound of an unbounded quantifier (``*``, ``+``, ``{n,}``).
UNBOUNDED: int = _constants.MAXREPEAT


def quantifier_bounds(pattern: re.Pattern[str]) -> list[tuple[int, int]]:
    """(min, max) of every quantifier in ``pattern``, nested ones included."""
    found: list[tuple[int, int]] = []

    def walk(items: object) -> None:
        for op, value in items:  # type: ignore[attr-defined]
            if op in (_constants.MAX_REPEAT, _constants.MIN_REPEAT, _constants.POSSESSIVE_REPEAT):
                low, high, sub = value
                found.append((low, high))
                walk(sub)
            elif op is _constants.SUBPATTERN:
                walk(value[-1])
            elif op is _constants.BRANCH:
                for branch in value[1]:
                    walk(branch)
            elif op in (_constants.ASSERT, _constants.ASSERT_NOT):
                walk(value[1])

    walk(_parser.parse(pattern.pattern, pattern.flags))
    return found
