"""The recovery report for people (the demo's table and HTML page): sound with no data at all, the
per-group interval, round chart axes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from sandbox.recovery_view import Truth, _nice_max, report_html, report_table, wilson
from shared.recovery.report import recovery_figures
from shared.state.sqlite import SqliteStore

DAY = datetime(2026, 3, 2, tzinfo=UTC)


async def test_an_empty_report_renders_without_figures(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "empty.sqlite3")
    try:
        body = (
            await recovery_figures(
                store,
                start=DAY,
                end=DAY + timedelta(days=1),
                oun=None,
                attribution=timedelta(days=7),
                holdout_percent=10,
            )
        ).body()
    finally:
        await store.close()
    lines = report_table(body, Truth(baseline=0.12, mailed=0.18))
    assert "  lift (any): n/a (no held-out or no mailed carts)" in lines
    assert any("no lift yet" in line for line in lines)
    html = report_html(body, [(DAY, body)], truth=None)
    assert html.count("<svg") == 2  # no currency, so no revenue chart
    assert "n/a" in html and "<script" not in html


@pytest.mark.parametrize(
    ("successes", "trials", "low", "high"),
    [(0, 10, 0.0, 0.2775), (5, 10, 0.2366, 0.7634), (18, 100, 0.1170, 0.2667), (10, 10, 0.7225, 1.0)],
)
def test_the_group_interval_is_wilsons(successes: int, trials: int, low: float, high: float) -> None:
    interval = wilson(successes, trials)
    assert interval is not None
    assert interval == pytest.approx((low, high), abs=1e-4)


def test_no_carts_no_interval() -> None:
    assert wilson(0, 0) is None


@pytest.mark.parametrize(
    ("value", "axis"), [(0.0, 1.0), (0.23, 0.25), (0.26, 0.3), (1.1, 1.2), (870.0, 1000.0), (2100.0, 2500.0)]
)
def test_chart_axes_end_on_round_numbers(value: float, axis: float) -> None:
    assert _nice_max(value) == pytest.approx(axis)
