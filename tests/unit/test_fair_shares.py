"""How one run's MAX_CARTS_PER_RUN is split between the channels still having carts."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from shared.abandoned_carts.detect import ChannelOutcome, fair_shares, merge_outcomes


@pytest.mark.parametrize(
    ("budget", "channels", "shares"),
    [
        (10, ["a", "b", "c"], {"a": 4, "b": 3, "c": 3}),
        (9, ["a", "b", "c"], {"a": 3, "b": 3, "c": 3}),
        (2, ["a", "b", "c"], {"a": 1, "b": 1, "c": 0}),
        (100_000, ["a", "b"], {"a": 50_000, "b": 50_000}),
        (0, ["a", "b"], {"a": 0, "b": 0}),
        (-3, ["a"], {"a": 0}),
        (5, [], {}),
    ],
)
def test_equal_shares_use_the_whole_budget(budget: int, channels: list[str], shares: dict[str, int]) -> None:
    assert fair_shares(budget, channels) == shares
    assert sum(shares.values()) == max(budget, 0) or not channels


def test_the_rounds_of_one_channel_add_up() -> None:
    at = datetime(2026, 12, 1, tzinfo=UTC)
    first = ChannelOutcome(window_from=at, window_to=at, found=4, queued=3, pages=1, stopped="cap_reached")
    first.skipped["anonymous"] = 1
    second = ChannelOutcome(window_from=at, window_to=at, found=2, queued=1, pages=2, stopped="complete")
    second.skipped.update({"anonymous": 1, "voided": 1})
    merged = merge_outcomes(merge_outcomes(None, first), second)
    assert (merged.found, merged.queued, merged.pages, merged.stopped) == (6, 4, 3, "complete")
    assert merged.skipped == {"anonymous": 2, "voided": 1}
