"""``make demo`` end to end: detection, notification and CreateCustomer through the registered
functions against the sandbox, in a scratch directory."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from sandbox import demo
from sandbox.demo_recovery import RecoveryOptions
from shared.recovery.report import recovery_figures
from shared.state.sqlite import SqliteStore


@pytest.fixture
def scratch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, registered_functions: dict[str, Any]) -> Path:
    # registered_functions first: the demo re-indexes the app after the session fixture did.
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ENTRA_CLIENT_SECRET", raising=False)
    return tmp_path


async def test_demo_detects_notifies_and_creates_a_customer(scratch: Path) -> None:
    text = await demo.run_demo("preview", seed=42)
    assert "Detection (detect_abandoned_carts, one timer run):" in text
    previewed = next(line for line in text.splitlines() if line.strip().endswith(" previewed"))
    count = int(previewed.split()[0])
    assert count > 0
    pages = sorted((scratch / "out/previews").glob("*.html"))
    payloads = sorted((scratch / "out/previews").glob("*.json"))
    assert len(pages) == count and len(payloads) == count
    data = json.loads(payloads[0].read_text())["data"]
    assert data["products"] and data["cartUrl"].startswith("https://shop.example.com/cart?cartId=")
    assert "skipped (no_email)" in text or "skipped (" in text
    assert "CreateCustomer: POST /api/customers answered 201, new customer account" in text
    assert "ms-d365sc://executeAction?actionName=D365.CreateTransaction&param=" in text


async def test_demo_through_the_emarsys_stand_in(scratch: Path) -> None:
    text = await demo.run_demo("emarsys", seed=7)
    accepted = next(line for line in text.splitlines() if "Emarsys stand-in accepted" in line)
    sent = next(line for line in text.splitlines() if line.strip().endswith(" sent"))
    assert accepted.split("accepted ")[1].split()[0] == sent.split()[0]


# A fixed first day: who is held out depends on the day (HOLDOUT_PERIOD_DAYS), so the run is the
# same whenever the test runs.
SIMULATION = RecoveryOptions(days=2, carts_per_day=60, seed=42, start=datetime(2026, 3, 2, tzinfo=UTC))
# What the demo puts in the environment for the simulation (the Emarsys stand-in's credentials and
# the holdout salt), restored when the test ends.
SIMULATION_SECRETS = ("HOLDOUT_SALT", "EMARSYS_CLIENT_SECRET", "EMARSYS_WSSE_USER", "EMARSYS_WSSE_SECRET")


def _line(text: str, start: str) -> str:
    return next(line for line in text.splitlines() if line.startswith(start))


async def _figures(path: Path) -> dict[str, Any]:
    """The report's figures, computed by the report's own function from the simulation's records."""
    store = SqliteStore(path)
    try:
        report = await recovery_figures(
            store,
            start=SIMULATION.first_day(),
            end=SIMULATION.first_day() + timedelta(days=SIMULATION.days),
            oun=None,
            attribution=timedelta(days=SIMULATION.attribution_days),
            holdout_percent=SIMULATION.holdout_percent,
        )
    finally:
        await store.close()
    return report.body()


async def test_demo_simulates_days_of_recovery_and_writes_the_report_with_charts(
    scratch: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in SIMULATION_SECRETS:
        monkeypatch.delenv(name, raising=False)
    text = await demo.run_demo("preview", seed=42, recovery=SIMULATION)
    assert "Notification (notify_abandoned_cart," in text  # the first part runs as before
    assert "Recovery simulation (2 days of carts, 2026-03-02 .. 2026-03-03, then 7 days of orders" in text
    # Over simulated time: detection every four hours while carts come, tracking every other day.
    runs = re.fullmatch(
        r"  (\d+) detection runs, (\d+) notify messages \((.+)\), (\d+) tracking runs; shoppers placed (\d+) orders",
        _line(text, "  11 detection runs, "),
    )
    assert runs is not None and int(runs[2]) > 100 and int(runs[4]) == 5 and int(runs[5]) > 0
    assert "held_out " in runs[3] and "sent " in runs[3]

    report = await _figures(scratch / ".state/demo/recovery.sqlite3")
    mailed, held = report["groups"]["mailed"], report["groups"]["holdout"]
    assert mailed["carts"] > 20 and held["carts"] > 20
    assert mailed["openCarts"] == held["openCarts"] == 0  # every window closed, every cart settled
    assert report["complete"] is True
    # The printed table shows the report's figures.
    for name, label in (("mailed", "  mailed "), ("holdout", "  held out ")):
        group = report["groups"][name]
        assert _line(text, label).split()[-8:-1] == [
            str(group["carts"]),
            str(group["converted"]["any"]),
            f"{group['conversionRate']['any'] * 100:.1f}",
            "%",
            str(group["converted"]["strict"]),
            f"{group['conversionRate']['strict'] * 100:.1f}",
            "%",
        ]
    lift = report["lift"]["any"]
    ci = lift["absoluteCi95"]
    assert _line(text, "  lift (any): ") == (
        f"  lift (any): {lift['absolute'] * 100:+.1f} pp, 95 % interval {ci['low'] * 100:+.1f} pp .. "
        f"{ci['high'] * 100:+.1f} pp, relative {lift['relative'] * 100:+.0f} %"
    )
    # The report finds the lift the sandbox was told to produce, within its confidence interval.
    assert ci["low"] <= SIMULATION.mailed_rate - SIMULATION.baseline_rate <= ci["high"]
    assert "the true lift (+6.0 pp) lies inside the report's 95 % interval" in text
    # Orders online and in store, some without a product of the cart, in both channels' currencies.
    assert {c["channel"] for c in report["byChannel"]} == {"online", "store"}
    strict = mailed["converted"]["strict"] + held["converted"]["strict"]
    assert strict < mailed["converted"]["any"] + held["converted"]["any"]
    assert [r["currency"] for r in report["revenue"]] == ["EUR", "USD"]
    for row in report["revenue"]:
        assert _line(text, f"  {row['currency']} ").split()[1] == f"{Decimal(row['mailedRevenue']):,.2f}"

    page = scratch / "out/previews/recovery-report.html"
    assert "  HTML report with charts: out/previews/recovery-report.html" in text
    html = page.read_text()
    # Conversion by group, the lift, and revenue by day in each currency.
    assert html.count("<svg") == 2 + len(report["revenue"])
    for title in (
        "Conversion rate by group with 95 % intervals",
        "Lift (mailed minus held out) with 95 % intervals",
        "Revenue by day of the first reminder, EUR",
        "Revenue by day of the first reminder, USD",
    ):
        assert f"<title>{title}</title>" in html
    for row in report["revenue"]:
        assert f"<td>{Decimal(row['mailedRevenue']):,.2f}</td>" in html
    assert f"<td>{lift['absolute'] * 100:+.1f} pp</td>" in html
    assert f"<td>{mailed['conversionRate']['any'] * 100:.1f} %</td>" in html
    # Self-contained and aggregate: no script, nothing fetched, no shopper's address or name.
    assert "<script" not in html and "src=" not in html and "href=" not in html
    assert "@" not in html and "Shopper" not in html
    # Beside it, the first part's email previews, as many as it printed.
    previewed = next(line for line in text.splitlines() if line.strip().endswith(" previewed"))
    assert len([p for p in page.parent.glob("*.html") if p != page]) == int(previewed.split()[0])
