"""``make demo``: the whole connector against the sandbox, through the functions registered on
``function_app.app``, called with real ``azure.functions`` binding objects as the host would.

1. detection: the timer function ``detect_abandoned_carts`` once, with the SQLite store;
2. notification: every message it queued through ``notify_abandoned_cart``, with the preview
   provider (``--provider emarsys`` sends through the Emarsys stand-in instead);
3. CreateCustomer: one customer through ``create_customer`` against the F&O stand-in;
4. recovery: a few simulated days of carts, reminders with a holdout and the orders that follow,
   through detection, notify, ``track_conversions`` and the recovery report on a simulated clock
   (``sandbox/demo_recovery.py``); the report printed as a table and written as an HTML page with
   charts beside the email previews.

It prints what happened and where the rendered email previews are. With ``--telemetry console`` it
also keeps the run's OpenTelemetry spans and metrics in memory (``sandbox/telemetry.py``), prints
the detection run's trace id and one cart's whole trace, from the timer to the provider, and
writes every span and metric point as JSON lines under ``out/telemetry/``. Nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shutil
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import azure.functions as func
from azure.functions.queue import QueueMessage  # the host's class: it carries dequeue_count
from azure.functions.timer import TimerRequest
from opentelemetry.trace import format_trace_id

from sandbox import emarsys, fno, orders
from sandbox import telemetry as local_telemetry
from sandbox.bindings import OutBinding
from sandbox.demo_customers import demo_request, describe
from sandbox.server import Sandbox
from shared.runtime import Runtime, set_runtime
from shared.settings import Settings
from shared.state.ledger import Ledger
from shared.state.records import RunSummaryStore

if TYPE_CHECKING:
    from sandbox.demo_recovery import RecoveryOptions

PROJECT_ROOT = Path(__file__).resolve().parent.parent
STATE_DIR = Path(".state/demo")
PREVIEW_DIR = Path("out/previews")
TELEMETRY_DIR = Path("out/telemetry")


def registered_functions() -> dict[str, Any]:
    import function_app

    # get_functions() indexes the app once per process; a second call (tests) must reset it.
    function_app.app.functions_bindings = None
    functions = function_app.app.get_functions()
    return {str(f.get_function_name()): f.get_user_function() for f in functions}


def demo_configuration(
    sandbox: Sandbox, provider: str, *, sqlite_path: Path, preview_dir: Path, **overrides: Any
) -> tuple[Settings, dict[str, str]]:
    """The settings that point the app at the sandbox (``overrides`` on top), and the secrets to
    put in the environment (the benchmarks use the same)."""
    values: dict[str, Any] = {
        "entra_tenant_id": sandbox.tenant_id,
        "entra_authority_host": sandbox.authority_host,
        "entra_client_id": sandbox.client_id,
        "retail_server_url": sandbox.retail_server_url,
        "retail_server_audience": sandbox.retail_server_audience,
        "operating_unit_numbers": "128,067",
        "extra_ca_bundle": sandbox.ca_path,
        "state_store": "sqlite",
        "sqlite_path": sqlite_path,
        "site_url": "https://shop.example.com",
        # A retailer's Commerce CDN (Media Server Base URL); images do not load offline.
        "image_base_url": "https://images-us-prod.cms.commerce.dynamics.com/cms/api/demo/imageFileData/search?fileName=/",
        "return_to_cart_url_template": "https://shop.example.com/cart?cartId={cartId}&channel={channelId}",
        "unsubscribe_url_template": "https://shop.example.com/unsubscribe?customer={customerId}",
        "reminder_steps": "60,1440",
        "fno_url": fno.fno_url(sandbox),
        "preview_dir": preview_dir,
        "email_provider": "preview",
    }
    secrets = {"ENTRA_CLIENT_SECRET": sandbox.client_secret}
    if provider == "emarsys":
        for key, value in emarsys.env(sandbox).items():
            if key.lower() in Settings.model_fields:
                values[key.lower()] = value
            else:
                secrets[key] = value  # the stand-in's credentials, read as local secrets
    return Settings(**{**values, **overrides}), secrets


def demo_settings(sandbox: Sandbox, provider: str) -> Settings:
    settings, secrets = demo_configuration(
        sandbox, provider, sqlite_path=STATE_DIR / "connector.sqlite3", preview_dir=PREVIEW_DIR
    )
    os.environ.update(secrets)
    return settings


def fresh_directories() -> None:
    """Each demo starts from an empty ledger and no previews, so it shows a first run."""
    shutil.rmtree(STATE_DIR, ignore_errors=True)
    shutil.rmtree(PREVIEW_DIR, ignore_errors=True)
    STATE_DIR.mkdir(parents=True, exist_ok=True)


def host_batch_size() -> int:
    host = json.loads((PROJECT_ROOT / "host.json").read_text())
    return int(host["extensions"]["queues"]["batchSize"])


def preview_pages() -> list[Path]:
    return sorted(PREVIEW_DIR.glob("*.html"))


async def run_demo(
    provider: str, seed: int, recovery: RecoveryOptions | None = None, *, telemetry: str = "off"
) -> str:
    """The demo's report; with ``recovery``, the recovery simulation's too."""
    local = local_telemetry.install() if telemetry == "console" else None
    if local is not None:
        local.clear()
    await asyncio.to_thread(fresh_directories)
    functions = registered_functions()
    text = await _run_pass(functions, provider, seed, local)
    if recovery is None:
        return text
    # Imported here: the simulation builds on this module's helpers.
    from sandbox import demo_recovery

    simulation = await demo_recovery.simulate(
        functions, recovery, state_dir=STATE_DIR, preview_dir=PREVIEW_DIR
    )
    html_path = await asyncio.to_thread(demo_recovery.write_html, simulation, PREVIEW_DIR)
    return "\n".join([text, "", *demo_recovery.summary_lines(simulation, html_path)])


async def _run_pass(
    functions: dict[str, Any], provider: str, seed: int, local: local_telemetry.LocalTelemetry | None
) -> str:
    extensions = [orders.add_routes, fno.add_routes, emarsys.add_routes]
    async with Sandbox(seed=seed, extensions=extensions) as sandbox:
        settings = demo_settings(sandbox, provider)
        runtime = Runtime.create(settings)
        set_runtime(runtime)
        try:
            lines = [f"Sandbox on {sandbox.base_url} (seed {seed}); state in {settings.sqlite_path}", ""]
            lines += await _detect_and_notify(functions, runtime, sandbox, provider)
            lines += ["", await _create_customer(functions)]
            if local is not None:
                lines += ["", *await _telemetry(local)]
            return "\n".join(lines)
        finally:
            set_runtime(None)
            await runtime.close()


async def _detect_and_notify(
    functions: dict[str, Any], runtime: Runtime, sandbox: Sandbox, provider: str
) -> list[str]:
    queued = OutBinding()
    await functions["detect_abandoned_carts"](TimerRequest(past_due=False), queued)
    messages: list[str] = queued.get() or []
    summary = await _latest_summary(runtime)
    lines = [
        "Detection (detect_abandoned_carts, one timer run):",
        f"  carts found {summary['found']}, queued {summary['queued']}, "
        f"re-queued due steps {summary['requeued']}, in {summary['durationMs']} ms",
        *(
            f"  channel {oun}: window {c['window']['from']} .. {c['window']['to']}, "
            f"{c['found']} found, {c['queued']} queued, {c['pages']} pages"
            for oun, c in summary["channels"].items()
        ),
        "  skipped: " + _counts(summary["skipped"]),
        "",
    ]
    batch_size = await asyncio.to_thread(host_batch_size)
    delivered = await deliver_messages(functions, runtime, messages, batch_size)
    outcomes, degraded, poisoned = delivered.outcomes, delivered.degraded, delivered.poisoned
    lines += [
        f"Notification (notify_abandoned_cart, {len(messages)} queue messages, {batch_size} at a time, "
        f"provider {provider}):",
        *(f"  {count:4d}  {outcome}" for outcome, count in sorted(outcomes.items())),
    ]
    if poisoned:
        lines.append(f"  {poisoned:4d}  moved to the poison queue")
    lines += [
        f"  {count:4d}  of these went without {part} (degraded: an optional look-up failed)"
        for part, count in sorted(degraded.items())
    ]
    if provider == "emarsys":
        triggers = emarsys.stand_in(sandbox).triggers
        lines.append(f"  the Emarsys stand-in accepted {len(triggers)} external-event trigger(s)")
    else:
        pages = await asyncio.to_thread(preview_pages)
        lines.append(f"  email previews: {len(pages)} HTML pages and their JSON payloads in {PREVIEW_DIR}/")
        if pages:
            lines.append(f"  open one: {pages[0].resolve().as_uri()}")
    return lines


@dataclass
class Delivered:
    """What notify made of a pass's messages: ledger outcomes (with reasons), degraded parts."""

    outcomes: Counter[str] = field(default_factory=Counter)
    degraded: Counter[str] = field(default_factory=Counter)
    poisoned: int = 0


async def deliver_messages(
    functions: dict[str, Any], runtime: Runtime, messages: list[str], batch_size: int
) -> Delivered:
    """Every message through ``notify_abandoned_cart`` as the host does: up to host.json's
    batchSize messages of one instance at a time."""
    delivered = Delivered()

    async def deliver(index: int, body: str) -> None:
        poison = OutBinding()
        message = QueueMessage(id=f"demo-{index}", body=body.encode("utf-8"), dequeue_count=1)  # type: ignore[no-untyped-call]
        try:
            await functions["notify_abandoned_cart"](message, poison)
        except Exception as exc:  # the host would retry; the demo reports it
            delivered.outcomes[f"failed ({type(exc).__name__})"] += 1
            return
        if poison.get() is not None:
            delivered.poisoned += 1
            return
        decoded = json.loads(body)
        found = await Ledger(runtime.store).get(decoded["cartId"], decoded["cartVersion"], decoded["step"])
        if found is not None:
            entry = found[0]
            delivered.outcomes[entry.status.value + (f" ({entry.reason})" if entry.reason else "")] += 1
            delivered.degraded.update(entry.degraded)

    for start in range(0, len(messages), batch_size):
        await asyncio.gather(
            *(deliver(start + i, body) for i, body in enumerate(messages[start : start + batch_size]))
        )
    return delivered


async def _telemetry(local: local_telemetry.LocalTelemetry) -> list[str]:
    """The run's trace id, one mailed cart's whole trace, the metrics, and where the rest is."""
    spans = local.spans()
    points = local.points()
    runs = [s for s in spans if s.name == "detect_abandoned_carts" and s.context is not None]
    lines = [
        "Telemetry (--telemetry console: kept in memory here; in Azure it goes to Application Insights):"
    ]
    if not runs:
        return [*lines, "  no detection run span was recorded"]
    trace_id = runs[-1].context.trace_id
    in_run = [s for s in spans if s.context is not None and s.context.trace_id == trace_id]
    lines.append(
        f"  detection run trace id {format_trace_id(trace_id)} "
        f"(operation_Id in Application Insights): {len(in_run)} spans"
    )
    cart = _a_mailed_cart(spans)
    if cart is not None:
        journey = local_telemetry.journey(spans, cart)
        lines.append(f"  one cart's journey, cart {cart}, from the timer to the provider:")
        lines += [f"    {'  ' * depth}{local_telemetry.describe(span)}" for depth, span in journey]
    totals = local_telemetry.totals(points)
    lines.append("  metrics (sum, or the count of a histogram's values):")
    lines += [
        f"    {name} {{{', '.join(f'{k}={v}' for k, v in dims)}}} {value:g}"
        for (name, dims), value in sorted(totals.items())
        if name in _SHOWN_METRICS
    ]
    folder = await asyncio.to_thread(local_telemetry.write_json_lines, spans, points, TELEMETRY_DIR)
    lines.append(
        f"  every span and metric point as JSON lines: {folder} and {folder.parent / 'metrics.jsonl'}"
    )
    return lines


# The metrics the demo prints; the rest (durations, batch sizes) are in the JSON lines.
_SHOWN_METRICS = frozenset(
    {
        "connector.carts.found",
        "connector.carts.queued",
        "connector.carts.skipped",
        "connector.detection.runs",
        "connector.notify.outcomes",
        "connector.customers.created",
        "connector.tokens.acquired",
    }
)


def _a_mailed_cart(spans: list[Any]) -> str | None:
    """A cart whose notify invocation reached the provider (sent or previewed)."""
    for span in spans:
        attributes = dict(span.attributes or {})
        if span.name == "notify_abandoned_cart" and attributes.get("connector.outcome") in (
            "sent",
            "previewed",
        ):
            return str(attributes.get("connector.cart_id"))
    return None


async def _latest_summary(runtime: Runtime) -> dict[str, Any]:
    recent = await RunSummaryStore(runtime.store).recent(limit=1)
    if not recent:
        raise RuntimeError("the detection run saved no summary")
    return recent[0]


async def _create_customer(functions: dict[str, Any]) -> str:
    response: func.HttpResponse = await functions["create_customer"](demo_request())
    return describe(response)


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{reason} {count}" for reason, count in sorted(counts.items())) or "none"


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m sandbox.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--provider", choices=["preview", "emarsys"], default="preview")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--telemetry",
        choices=["off", "console"],
        default="off",
        help="console: keep the run's spans and metrics in memory and print one cart's whole trace",
    )
    from sandbox import demo_recovery

    demo_recovery.add_arguments(parser)
    args = parser.parse_args()
    try:
        options = demo_recovery.options_from(args)
    except ValueError as exc:
        parser.error(str(exc))
    # Warnings and errors on the console; the app's INFO records (run summary, outcomes) are what
    # the demo summarises itself.
    console = logging.StreamHandler()
    console.setLevel(logging.WARNING)
    console.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    logging.getLogger().addHandler(console)
    started = datetime.now(UTC)
    print(asyncio.run(run_demo(args.provider, args.seed, options, telemetry=args.telemetry)))
    print(f"\nDone in {(datetime.now(UTC) - started).total_seconds():.1f} s.")


if __name__ == "__main__":
    main()
