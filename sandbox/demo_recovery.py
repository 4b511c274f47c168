"""The recovery part of ``make demo``: a few simulated days of abandoned carts, reminders with a
holdout, and the orders that follow, measured by the connector's own recovery report.

A sandbox of its own gets ``carts_per_day`` bulk carts a day (each of its own shopper, split over
both channels, so in USD and EUR). An injected clock then moves through the days and the functions
registered on ``function_app.app`` run as their triggers would: ``detect_abandoned_carts`` every
four simulated hours, ``notify_abandoned_cart`` for every message it queued (through the Emarsys
stand-in, with ``HOLDOUT_PERCENT`` set, since a dry run holds nobody out), ``track_conversions``
every other simulated day until every attribution window has closed, and ``recovery_report`` at the end
(for the whole time and for each day). Nothing sleeps.

After each notify pass the shoppers just mailed or held out buy within the attribution window with
the configured probabilities (``sandbox.recovery.place_orders``: some at a store's till, some
without a product of the cart), so the report has a true lift to find.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import azure.functions as func
from azure.functions.timer import TimerRequest

import shared.abandoned_carts.blueprint as carts_blueprint
import shared.recovery.blueprint as recovery_blueprint
from sandbox import emarsys, orders
from sandbox.bindings import OutBinding
from sandbox.demo import deliver_messages, demo_configuration, host_batch_size
from sandbox.recovery import LiftScenario, TrackedCartView, place_orders
from sandbox.recovery_view import Truth, percent, points, report_html, report_table
from sandbox.server import Sandbox
from shared.recovery.records import CART_KIND, RecoveryStore, TrackedCart
from shared.runtime import Runtime, set_runtime

# Sandbox-only, not a secret: it only keys which demo shopper is held out.
DEMO_HOLDOUT_SALT = "sandbox-only~demo-holdout-salt~not-secret"
DETECT_EVERY = timedelta(hours=4)
TRACK_EVERY = timedelta(days=2)
# Carts of the last simulated day stop this long before midnight, so the day's last detection run
# (at 20:00) finds them all: every cart is held out or mailed on a simulated day.
QUIET_BEFORE_MIDNIGHT = timedelta(hours=6)
REMINDER_STEPS = "60"
# The shoppers' channels: the US web shop (USD, stores HOU-01/02) and the German one (EUR, BER-01).
CHANNEL_SHARES = {"128": 0.7, "067": 0.3}
HTML_NAME = "recovery-report.html"


@dataclass(frozen=True)
class RecoveryOptions:
    """What the simulation does (``python -m sandbox.demo --help`` names the flags)."""

    days: int = 3
    carts_per_day: int = 100
    holdout_percent: int = 50
    # The rates default to the scenario's, so the demo and the report tests build in the same truth.
    baseline_rate: float = LiftScenario.baseline
    mailed_rate: float = LiftScenario.mailed
    store_share: float = LiftScenario.store_share
    other_products_share: float = LiftScenario.other_products_share
    attribution_days: int = 7
    seed: int = 10
    # Midnight UTC (an aware datetime) of the first simulated day; by default the simulation ends today.
    start: datetime | None = None

    def __post_init__(self) -> None:
        for name in ("baseline_rate", "mailed_rate", "store_share", "other_products_share"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must lie between 0 and 1")
        if not 1 <= self.days <= 14:
            raise ValueError("days must be 1 to 14")
        if not 1 <= self.carts_per_day <= 5000:
            raise ValueError("carts_per_day must be 1 to 5000")
        if not 1 <= self.holdout_percent <= 50:
            raise ValueError("holdout_percent must be 1 to 50 (HOLDOUT_PERCENT's range; 0 measures nothing)")
        if not 1 <= self.attribution_days <= 30:
            raise ValueError("attribution_days must be 1 to 30 (ATTRIBUTION_DAYS' range)")

    @property
    def true_lift(self) -> float:
        return self.mailed_rate - self.baseline_rate

    def first_day(self) -> datetime:
        if self.start is not None:
            return self.start.astimezone(UTC)
        today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        return today - timedelta(days=self.days + self.attribution_days + 1)

    def scenario(self, round_number: int) -> LiftScenario:
        """The scenario of one notify pass: the same rates, a seed of its own."""
        return LiftScenario(
            baseline=self.baseline_rate,
            mailed=self.mailed_rate,
            store_share=self.store_share,
            other_products_share=self.other_products_share,
            seed=self.seed * 100_003 + round_number,
        )


@dataclass
class Simulation:
    """What happened, and the report's answers (JSON bodies of ``GET /api/reports/recovery``)."""

    options: RecoveryOptions
    start: datetime
    end: datetime
    carts: dict[str, int] = field(default_factory=dict)
    detection_runs: int = 0
    messages: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    tracking_runs: int = 0
    orders_placed: int = 0
    report: dict[str, Any] = field(default_factory=dict)
    # (first day, report of the carts first reminded that day)
    daily: list[tuple[datetime, dict[str, Any]]] = field(default_factory=list)


class SimulatedClock:
    """The invocation time the blueprints hand the functions (their ``utcnow``), moved by the demo."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


# The blueprints whose functions take the invocation time from their module's ``utcnow``.
_CLOCKED_MODULES = (carts_blueprint, recovery_blueprint)
_CLOCK_NAME = "utcnow"


@contextmanager
def simulated_time(clock: Callable[[], datetime]) -> Iterator[None]:
    """The registered functions take their time from ``clock`` (as the tests' clock fixture does)."""
    saved = [getattr(module, _CLOCK_NAME) for module in _CLOCKED_MODULES]
    for module in _CLOCKED_MODULES:
        setattr(module, _CLOCK_NAME, clock)
    try:
        yield
    finally:
        for module, original in zip(_CLOCKED_MODULES, saved, strict=True):
            setattr(module, _CLOCK_NAME, original)


def add_shoppers(sandbox: Sandbox, options: RecoveryOptions, start: datetime) -> dict[str, int]:
    """Bulk carts spread over the simulated days, per channel; their shoppers as Emarsys contacts."""
    sandbox.data.carts.clear()  # only the simulation's shoppers leave carts
    total = options.carts_per_day * options.days
    span = timedelta(days=options.days) - QUIET_BEFORE_MIDNIGHT
    counts = {oun: max(1, round(total * share)) for oun, share in CHANNEL_SHARES.items()}
    for oun, count in counts.items():
        sandbox.data.add_bulk_carts(oun, count, newest=start + span, span=span)
    # The shoppers are Emarsys contacts already, as `python -m sandbox --carts` makes them.
    emarsys.stand_in(sandbox).directory = sandbox.data.is_bulk_email
    return counts


async def simulate(
    functions: dict[str, Any], options: RecoveryOptions, *, state_dir: Path, preview_dir: Path
) -> Simulation:
    start = options.first_day()
    last_cart = start + timedelta(days=options.days)
    # Every window has closed by then: the last carts were enrolled before their day ended.
    end = last_cart + timedelta(days=options.attribution_days + 1)
    simulation = Simulation(options=options, start=start, end=end)
    sqlite_path = state_dir / "recovery.sqlite3"
    await asyncio.to_thread(sqlite_path.unlink, missing_ok=True)
    async with Sandbox(
        seed=options.seed, now=start, extensions=[orders.add_routes, emarsys.add_routes]
    ) as sandbox:
        simulation.carts = add_shoppers(sandbox, options, start)
        settings, secrets = demo_configuration(
            sandbox,
            "emarsys",
            sqlite_path=sqlite_path,
            preview_dir=preview_dir,
            holdout_percent=options.holdout_percent,
            attribution_days=options.attribution_days,
            reminder_steps=REMINDER_STEPS,
            max_tracked_carts_per_run=50_000,
        )
        os.environ.update({**secrets, "HOLDOUT_SALT": DEMO_HOLDOUT_SALT})
        runtime = Runtime.create(settings)
        set_runtime(runtime)
        clock = SimulatedClock(start)
        try:
            with simulated_time(clock):
                await _run(functions, runtime, sandbox, simulation, clock)
                clock.now = end
                simulation.report = await _report(
                    functions, start.date(), (last_cart - timedelta(days=1)).date()
                )
                for day in range(options.days):
                    first = start + timedelta(days=day)
                    simulation.daily.append((first, await _report(functions, first.date(), first.date())))
        finally:
            set_runtime(None)
            await runtime.close()
    return simulation


async def _run(
    functions: dict[str, Any],
    runtime: Runtime,
    sandbox: Sandbox,
    simulation: Simulation,
    clock: SimulatedClock,
) -> None:
    """Four simulated hours at a time: detection and notify while carts come, then the shoppers'
    orders; tracking every other day, and once more when every window has closed."""
    batch_size = await asyncio.to_thread(host_batch_size)
    # One reminder step: once the last carts are found, detection has nothing left to do.
    last_detection = simulation.start + timedelta(days=simulation.options.days) - DETECT_EVERY
    now = simulation.start
    while now < simulation.end:
        now = min(now + DETECT_EVERY, simulation.end)
        clock.now = now
        if now <= last_detection:
            await _detect_notify_and_buy(functions, runtime, sandbox, simulation, now, batch_size)
        if (now - simulation.start) % TRACK_EVERY == timedelta(0) or now == simulation.end:
            await functions["track_conversions"](TimerRequest(past_due=False))
            simulation.tracking_runs += 1


async def _detect_notify_and_buy(
    functions: dict[str, Any],
    runtime: Runtime,
    sandbox: Sandbox,
    simulation: Simulation,
    now: datetime,
    batch_size: int,
) -> None:
    queued = OutBinding()
    await functions["detect_abandoned_carts"](TimerRequest(past_due=False), queued)
    messages: list[str] = queued.get() or []
    simulation.detection_runs += 1
    simulation.messages += len(messages)
    delivered = await deliver_messages(functions, runtime, messages, batch_size)
    simulation.outcomes.update(delivered.outcomes)
    # The carts this pass mailed or held out (enrolled now), and whether their shoppers buy.
    enrolled = [
        TrackedCart.model_validate(body)
        async for body in RecoveryStore(runtime.store).scan(
            CART_KIND, start=now, end=now + timedelta(microseconds=1), oun=None
        )
    ]
    views = [
        TrackedCartView(c.customer_id, c.oun, tuple(c.product_ids), c.group == "mailed", c.enrolled_at)
        for c in enrolled
    ]
    options = simulation.options
    scenario = options.scenario(simulation.detection_runs)
    placed = place_orders(sandbox.data, views, scenario, timedelta(days=options.attribution_days))
    simulation.orders_placed += len(placed)


async def _report(functions: dict[str, Any], first: date, last: date) -> dict[str, Any]:
    """``GET /api/reports/recovery`` for the carts first reminded from ``first`` to ``last``."""
    request = func.HttpRequest(
        method="GET",
        url="/api/reports/recovery",
        params={"from": first.isoformat(), "to": last.isoformat()},
        body=b"",
    )
    response: func.HttpResponse = await functions["recovery_report"](request)
    body: dict[str, Any] = json.loads(response.get_body())
    if response.status_code != 200:
        raise RuntimeError(f"the recovery report answered {response.status_code}: {body.get('detail')}")
    return body


def truth_of(options: RecoveryOptions) -> Truth:
    return Truth(baseline=options.baseline_rate, mailed=options.mailed_rate)


def write_html(simulation: Simulation, directory: Path) -> Path:
    """The report as a page with charts, beside the email previews."""
    options = simulation.options
    context = [
        f"Simulated in the sandbox: {sum(simulation.carts.values())} carts over {options.days} days; "
        f"true conversion built in: {percent(options.baseline_rate)} without an email, "
        f"{percent(options.mailed_rate)} with one.",
    ]
    page = report_html(simulation.report, simulation.daily, truth=truth_of(options), context=context)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / HTML_NAME
    path.write_text(page, encoding="utf-8")
    return path


def summary_lines(simulation: Simulation, html_path: Path) -> list[str]:
    options = simulation.options
    report = simulation.report
    last_day = simulation.start + timedelta(days=options.days - 1)
    channels = ", ".join(f"{count} in {oun}" for oun, count in simulation.carts.items())
    outcomes = ", ".join(f"{outcome} {count}" for outcome, count in sorted(simulation.outcomes.items()))
    return [
        f"Recovery simulation ({options.days} days of carts, "
        f"{simulation.start:%Y-%m-%d} .. {last_day:%Y-%m-%d}, then {options.attribution_days} days "
        "of orders; the functions run on a simulated clock):",
        f"  carts: {channels} (one shopper each); HOLDOUT_PERCENT {options.holdout_percent}, "
        f"ATTRIBUTION_DAYS {options.attribution_days}, provider emarsys (stand-in)",
        f"  true conversion built in: {percent(options.baseline_rate)} held out, "
        f"{percent(options.mailed_rate)} mailed (lift {points(options.true_lift)}); "
        f"{percent(options.store_share, 0)} of orders in store, "
        f"{percent(options.other_products_share, 0)} without a cart product",
        f"  {simulation.detection_runs} detection runs, {simulation.messages} notify messages ({outcomes}), "
        f"{simulation.tracking_runs} tracking runs; shoppers placed {simulation.orders_placed} orders",
        "",
        f"Recovery report (GET /api/reports/recovery?from={report['from'][:10]}&to={last_day:%Y-%m-%d}):",
        *report_table(report, truth_of(options)),
        f"  HTML report with charts: {html_path}",
        f"  open it: {html_path.resolve().as_uri()}",
    ]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The simulation's flags on the demo's command line."""
    defaults = RecoveryOptions()
    group = parser.add_argument_group("recovery simulation")
    group.add_argument(
        "--baseline-rate",
        type=float,
        default=defaults.baseline_rate,
        help="true share of held-out carts whose customer orders within the window (default %(default)s)",
    )
    group.add_argument(
        "--mailed-rate",
        type=float,
        default=defaults.mailed_rate,
        help="true share of mailed carts whose customer orders within the window (default %(default)s)",
    )
    group.add_argument(
        "--holdout-percent",
        type=int,
        default=defaults.holdout_percent,
        help="HOLDOUT_PERCENT of the simulation, 1-50 (default %(default)s)",
    )
    group.add_argument("--days", type=int, default=defaults.days, help="days of carts (default %(default)s)")
    group.add_argument(
        "--carts-per-day",
        type=int,
        default=defaults.carts_per_day,
        help="abandoned carts a day, both channels (default %(default)s; more carts, narrower intervals)",
    )
    group.add_argument("--no-recovery", action="store_true", help="skip the recovery simulation")


def options_from(args: argparse.Namespace) -> RecoveryOptions | None:
    """The options the flags ask for (None with --no-recovery); ValueError names a bad one."""
    if args.no_recovery:
        return None
    return RecoveryOptions(
        days=args.days,
        carts_per_day=args.carts_per_day,
        holdout_percent=args.holdout_percent,
        baseline_rate=args.baseline_rate,
        mailed_rate=args.mailed_rate,
        seed=args.seed,
    )
