"""Holdout assignment: which customers get no abandoned-cart email, so the report can measure what
the emails cause rather than what would have happened anyway.

A customer's group is a keyed hash (HMAC-SHA256 with a salt secret) of the account number and the
period number (days since 1970-01-01 divided by ``HOLDOUT_PERIOD_DAYS``): the same customer gets
the same group for the whole period, nobody can work out the groups without the salt, and a new
period draws everyone afresh, so no customer is kept from the emails for good.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SCALE = float(2**64)
# A salt shorter than this is refused: it would make the groups guessable.
MIN_SALT_BYTES = 16


class WeakSaltError(ValueError):
    """The salt secret is too short to key the assignment."""


def period_of(now: datetime, period_days: int) -> int:
    """The number of the holdout period ``now`` falls in."""
    return (now.astimezone(UTC) - _EPOCH).days // period_days


def assignment_value(salt: bytes, account: str, period: int) -> float:
    """A number in [0, 1), uniform over accounts and fixed for one account and period."""
    digest = hmac.new(salt, f"{account}|{period}".encode(), hashlib.sha256).digest()
    return int.from_bytes(digest[:8], "big") / _SCALE


def is_held_out(salt: bytes, account: str, now: datetime, *, percent: int, period_days: int) -> bool:
    """Whether ``account`` is in the holdout group at ``now`` (``percent`` of customers are)."""
    if percent <= 0:
        return False
    if len(salt) < MIN_SALT_BYTES:
        raise WeakSaltError(f"the holdout salt must be at least {MIN_SALT_BYTES} bytes")
    return assignment_value(salt, account, period_of(now, period_days)) < percent / 100
