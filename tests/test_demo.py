"""``make demo`` end to end: detection, notification and CreateCustomer through the registered
functions against the sandbox, in a scratch directory."""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from sandbox import demo
from sandbox.demo_customers import DEMO_CUSTOMER
from sandbox.demo_recovery import RecoveryOptions
from sandbox.server import Sandbox
from sandbox.telemetry import LocalTelemetry
from sandbox.telemetry import totals as metric_totals
from shared.recovery.report import recovery_figures
from shared.state.ledger import Ledger
from shared.state.sqlite import SqliteStore
from tests.conftest import event_records, exported_telemetry, extra_fields, personal_data_patterns
from tests.infra.test_monitoring import CONTRACT_METRICS, CONTRACT_RECORDS


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


# ----- the demo's telemetry, and every record it emits


@pytest.fixture
def demo_sandboxes(monkeypatch: pytest.MonkeyPatch) -> list[Sandbox]:
    """The sandbox the demo starts, kept to read its customers' personal data from."""
    started: list[Sandbox] = []

    class Kept(Sandbox):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            started.append(self)

    monkeypatch.setattr(demo, "Sandbox", Kept)
    return started


def personal_data(sandbox: Sandbox) -> list[re.Pattern[str]]:
    """The sandbox customers' emails, names and phones, and the demo's new customer's."""
    person = DEMO_CUSTOMER["Customer"]
    extra = [person["EmailAddress"], person["ContactNumber"], f"{person['FirstName']} {person['LastName']}"]
    return personal_data_patterns(sandbox) + [re.compile(re.escape(value), re.IGNORECASE) for value in extra]


async def test_demo_with_telemetry_prints_one_carts_trace_and_the_run_metrics(
    scratch: Path, demo_sandboxes: list[Sandbox], telemetry: LocalTelemetry
) -> None:
    text = await demo.run_demo("preview", seed=42, telemetry="console")

    lines = text.splitlines()
    [traced] = [line for line in lines if "detection run trace id" in line]
    trace_id = re.search(r"trace id ([0-9a-f]{32})", traced)
    assert trace_id is not None
    start = lines.index(next(line for line in lines if "one cart's journey" in line))
    tree = [
        line.strip() for line in lines[start + 1 :] if line.startswith("    ") and "connector." not in line
    ]
    assert tree[0].startswith("detect_abandoned_carts (server")
    assert tree[1].startswith("detect channel (internal")
    assert tree[2].startswith("notify_abandoned_cart (consumer")
    assert any(line.startswith("POST Carts/Search (client") for line in tree)
    assert any(line.startswith("email provider preview (internal") for line in tree)
    # Every span went to the JSON lines file, all of them in the run's trace or the customer's.
    spans = [json.loads(line) for line in (scratch / "out/telemetry/spans.jsonl").read_text().splitlines()]
    assert sum(1 for span in spans if span["context"]["trace_id"] == f"0x{trace_id.group(1)}") > 10

    # The metrics of the run agree with its summary and its ledger.
    points = telemetry.points()
    written = (scratch / "out/telemetry/metrics.jsonl").read_text().splitlines()
    assert written and all(json.loads(line)["name"].startswith("connector.") for line in written)
    totals = metric_totals(points)
    found = sum(v for (name, _), v in totals.items() if name == "connector.carts.found")
    queued = sum(v for (name, _), v in totals.items() if name == "connector.carts.queued")
    found_line = next(line for line in lines if line.strip().startswith("carts found"))
    assert f"carts found {int(found)}, queued {int(queued)}," in found_line
    outcomes = sum(v for (name, _), v in totals.items() if name == "connector.notify.outcomes")
    messages = int(next(line for line in lines if line.startswith("Notification")).split(", ")[1].split()[0])
    assert outcomes == messages
    assert totals[("connector.detection.runs", (("status", "succeeded"),))] == 1
    assert totals[("connector.customers.created", (("outcome", "created"), ("status", "201")))] == 1
    assert {dict(dims).get("oun") for (name, dims) in totals if name == "connector.detection.lag"} == {
        "128",
        "067",
    }
    assert all(
        set(dict(dims))
        <= {
            "oun",
            "reason",
            "outcome",
            "provider",
            "step",
            "degraded",
            "status",
            "service",
            "route",
            "result",
            "queue",
        }
        for _, dims in totals
    )

    # The workbook and alerts (infra/monitoring) read these names and dimensions: the code keeps them.
    emitted: dict[str, set[str]] = {}
    for name, dims in totals:
        emitted.setdefault(name, set()).update(dict(dims))
    for name, dimensions in CONTRACT_METRICS.items():
        if name in emitted:
            assert dimensions <= emitted[name], (name, dimensions - emitted[name])
    assert len(set(CONTRACT_METRICS) & set(emitted)) >= 10, sorted(emitted)

    # Nothing personal in any span or metric of the run.
    [sandbox] = demo_sandboxes
    patterns = personal_data(sandbox)
    # Every span and every metric point (those read above and any since).
    exported = exported_telemetry()
    assert not [text for text in exported if any(p.search(text) for p in patterns)]


async def test_every_record_a_demo_run_emits_parses(
    scratch: Path, demo_sandboxes: list[Sandbox], log_privacy_guard: Any
) -> None:
    """Each record's message is plain text, its custom dimensions are values Application Insights
    keeps as they are (ids, counts and versions unredacted), and the run summary and the notify
    outcomes say what the ledger says."""
    await demo.run_demo("preview", seed=42)

    records: list[logging.LogRecord] = log_privacy_guard.records
    assert records
    for record in records:
        message = record.getMessage()
        assert not re.search(r"\{\s*\"\w+\"\s*:", message), f"JSON inside a message: {message[:120]}"
        for key, value in extra_fields(record).items():
            assert isinstance(value, str | int | float | bool), (key, value)
            if isinstance(value, str):
                assert "[number]" not in value and "[email]" not in value, (key, value)

    [run] = event_records(records, "detection_run")
    assert run["status"] == "succeeded" and run["channels_failed"] == 0
    channels = json.loads(run["channels"])
    assert set(channels) == {"128", "067"}
    assert run["carts_found"] == sum(c["found"] for c in channels.values())
    assert run["carts_queued"] == sum(c["queued"] for c in channels.values())
    assert run["carts_skipped"] == sum(json.loads(run["skipped_by_reason"]).values())

    outcomes = event_records(records, "notify_outcome")
    assert len(outcomes) == run["carts_queued"] + run["carts_requeued"]
    ledger = Ledger(SqliteStore(scratch / demo.STATE_DIR / "connector.sqlite3"))
    for outcome in outcomes:
        assert isinstance(outcome["cart_version"], int) and isinstance(outcome["step"], int)
        found = await ledger.get(outcome["cart_id"], outcome["cart_version"], outcome["step"])
        assert found is not None, outcome
        assert found[0].status.value == outcome["outcome"]
        assert outcome["oun"] in {"128", "067"} and outcome["provider"] == "preview"
    [created] = event_records(records, "create_customer")
    assert (created["status"], created["outcome"]) == (201, "created")

    # The fields the workbook and alerts read are on every record of their event.
    seen = 0
    for record in records:
        fields = extra_fields(record)
        wanted = CONTRACT_RECORDS.get(str(fields.get("event")))
        if wanted is not None:
            seen += 1
            assert wanted <= set(fields), (fields["event"], wanted - set(fields))
    assert seen >= 3

    [sandbox] = demo_sandboxes
    # personal_data holds every pattern find_personal_data looks for, and the demo customer's.
    patterns = personal_data(sandbox)
    leaks = [line for line in log_privacy_guard.lines if any(p.search(line) for p in patterns)]
    assert not leaks, leaks[:3]


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
