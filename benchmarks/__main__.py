"""Run the benchmark scenarios against the sandbox and compare with the baseline.

Each scenario is bounded in count and time and talks only to 127.0.0.1. Results go to
``benchmarks/results/latest.json``; a scenario slower than its baseline target is reported, and
the exit status is non-zero, so ``make bench`` can gate a release without making tests flaky.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import azure.functions as func
from azure.functions.queue import QueueMessage  # the host's class: it carries dequeue_count
from azure.functions.timer import TimerRequest

from benchmarks import redaction
from sandbox import emarsys, fno, orders
from sandbox.bindings import OutBinding
from sandbox.demo import demo_configuration
from sandbox.demo_customers import DEMO_CUSTOMER
from sandbox.server import Sandbox
from shared.abandoned_carts.blueprint import detection_config, notify_service
from shared.abandoned_carts.detect import Detector
from shared.runtime import Runtime, set_runtime
from shared.settings import Settings
from shared.state.ledger import Ledger, LedgerEntry, LedgerStatus
from shared.state.sqlite import SqliteStore

HERE = Path(__file__).parent
_KEY = re.compile(r"\([^)]*\)")
Scenario = Callable[[Path], Awaitable[dict[str, Any]]]
# No scenario may run longer than this, whatever the app does (a hang fails the run, it never stalls).
SCENARIO_TIMEOUT_SECONDS = 300
# host.json: extensions.queues.batchSize, the queue messages one process runs at once.
QUEUE_BATCH_SIZE = 8
CUSTOMER_CALLS = 200
SLOW_FNO_CUSTOMER_CALLS = 50
SLOW_FNO_LATENCY_SECONDS = 0.05


def sandbox_settings(sandbox: Sandbox, state_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "entra_tenant_id": sandbox.tenant_id,
        "entra_authority_host": sandbox.authority_host,
        "entra_client_id": sandbox.client_id,
        "retail_server_url": sandbox.retail_server_url,
        "operating_unit_numbers": "128,067",
        "extra_ca_bundle": sandbox.ca_path,
        "sqlite_path": state_dir / "bench.sqlite3",
    }
    values.update(overrides)
    return Settings(**values)


async def detection_full_window(state_dir: Path) -> dict[str, Any]:
    """One detection run over the sandbox's whole lookback window, both channels, page size 100."""
    now = datetime.now(UTC)
    async with Sandbox(seed=7, now=now) as sandbox:
        os.environ["ENTRA_CLIENT_SECRET"] = sandbox.client_secret
        settings = sandbox_settings(sandbox, state_dir, lookback_minutes=4 * 24 * 60)
        runtime = Runtime.create(settings)
        try:
            started = time.perf_counter()
            result = await Detector(runtime.retail, runtime.store, detection_config(settings)).run(now)
            elapsed = time.perf_counter() - started
        finally:
            await runtime.close()
        found = sum(c.found for c in result.channels.values())
        pages = sum(c.pages for c in result.channels.values())
        return {
            "seconds": round(elapsed, 3),
            "carts_found": found,
            "carts_queued": len(result.messages),
            "pages": pages,
            "carts_per_second": round(found / elapsed, 1),
            "token_requests": sum(sandbox.stats.token_requests.values()),
        }


async def ledger_claims(state_dir: Path) -> dict[str, Any]:
    """Record and claim 2,000 ledger entries on SQLite, 50 at a time."""
    store = SqliteStore(state_dir / "ledger-bench.sqlite3")
    ledger = Ledger(store)
    now = datetime.now(UTC)
    latencies: list[float] = []

    async def one(i: int) -> None:
        entry = LedgerEntry(
            cart_id=f"cart-{i}",
            cart_version=1,
            step=1,
            oun="128",
            customer_id=f"C{i % 300}",
            modified_at=now,
            due_at=now,
            updated_at=now,
        )
        started = time.perf_counter()
        await ledger.record(entry)
        await ledger.transition(
            entry.cart_id,
            1,
            1,
            allowed_from=frozenset({LedgerStatus.PENDING}),
            to=LedgerStatus.CLAIMED,
            now=now,
        )
        latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    for batch in range(0, 2000, 50):
        await asyncio.gather(*(one(i) for i in range(batch, batch + 50)))
    elapsed = time.perf_counter() - started
    await store.close()
    latencies.sort()
    return {
        "seconds": round(elapsed, 3),
        "entries_per_second": round(2000 / elapsed, 1),
        "p50_ms": round(statistics.median(latencies) * 1000, 2),
        "p95_ms": round(latencies[int(len(latencies) * 0.95)] * 1000, 2),
    }


# ----- scenarios through the functions registered on function_app.app, as sandbox/demo.py calls them

_functions: dict[str, Any] | None = None


def registered_functions() -> dict[str, Any]:
    """The user functions of ``function_app.app`` by name, indexed once per process."""
    global _functions
    if _functions is None:
        import function_app

        function_app.app.functions_bindings = None  # get_functions() indexes once per process
        _functions = {
            str(f.get_function_name()): f.get_user_function() for f in function_app.app.get_functions()
        }
        # function_app sets the app's loggers to INFO; one line per message would be the benchmark.
        logging.getLogger("shared").setLevel(logging.WARNING)
    return _functions


@contextlib.contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    """Secrets as local environment variables for one scenario, restored afterwards."""
    previous = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def function_settings(sandbox: Sandbox, state_dir: Path, *, provider: str) -> tuple[Settings, dict[str, str]]:
    """The demo's settings (sandbox/demo.py) with state in ``state_dir``, and the secrets to set."""
    return demo_configuration(
        sandbox,
        provider,
        sqlite_path=state_dir / f"functions-{uuid.uuid4().hex[:8]}.sqlite3",
        preview_dir=state_dir / "previews",
    )


def percentile(sorted_values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    rank = max(1, -(-len(sorted_values) * fraction // 1))
    return sorted_values[int(rank) - 1]


def latency_figures(latencies: list[float]) -> dict[str, float]:
    ordered = sorted(latencies)
    return {
        "p50_ms": round(statistics.median(ordered) * 1000, 2),
        "p95_ms": round(percentile(ordered, 0.95) * 1000, 2),
        "max_ms": round(ordered[-1] * 1000, 2),
    }


def retail_server_requests(counts: Counter[str]) -> Counter[str]:
    """Retail Server requests by ``METHOD /path``, with keys in parentheses replaced by ``*``."""
    grouped: Counter[str] = Counter()
    for route, count in counts.items():
        method, _, path = route.partition(" ")
        if path.startswith("/rs/"):
            grouped[f"{method} {_KEY.sub('(*)', path)}"] += count
    return grouped


async def notify_throughput(state_dir: Path) -> dict[str, Any]:
    """The timer function once, then every queued message through ``notify_abandoned_cart``,
    8 at a time (host.json batchSize), sending through the Emarsys stand-in."""
    functions = registered_functions()
    extensions = [orders.add_routes, fno.add_routes, emarsys.add_routes]
    async with Sandbox(seed=42, extensions=extensions) as sandbox:
        settings, secrets = function_settings(sandbox, state_dir, provider="emarsys")
        with environment(secrets):
            runtime = Runtime.create(settings)
            set_runtime(runtime)
            try:
                queued = OutBinding()
                started = time.perf_counter()
                await functions["detect_abandoned_carts"](TimerRequest(past_due=False), queued)
                detection_seconds = time.perf_counter() - started
                bodies: list[str] = queued.get() or []
                before = Counter(sandbox.stats.requests)

                failures: Counter[str] = Counter()
                poisoned = 0

                async def one(index: int, body: str) -> None:
                    nonlocal poisoned
                    poison = OutBinding()
                    message = QueueMessage(  # type: ignore[no-untyped-call]
                        id=f"bench-{index}", body=body.encode("utf-8"), dequeue_count=1
                    )
                    try:
                        await functions["notify_abandoned_cart"](message, poison)
                    except Exception as exc:  # the host would retry; the benchmark counts it
                        failures[type(exc).__name__] += 1
                    if poison.get() is not None:
                        poisoned += 1

                started = time.perf_counter()
                for batch in range(0, len(bodies), QUEUE_BATCH_SIZE):
                    group = bodies[batch : batch + QUEUE_BATCH_SIZE]
                    await asyncio.gather(*(one(batch + i, body) for i, body in enumerate(group)))
                elapsed = time.perf_counter() - started
                outcomes = notify_service(runtime).outcomes
            finally:
                set_runtime(None)
                await runtime.close()
        during = Counter(sandbox.stats.requests)
        during.subtract(before)
        rs = retail_server_requests(+during)
        stand_in = emarsys.stand_in(sandbox)
        messages = len(bodies)
        sent = outcomes.get("sent", 0)
        skipped = {key.partition(":")[2]: n for key, n in outcomes.items() if key.startswith("skipped:")}
        emarsys_api = {
            route: n for route, n in during.items() if route.partition(" ")[2].startswith("/emarsys/api/")
        }
        problems = [f"{n} invocation(s) raised {name}" for name, n in failures.items()]
        if poisoned:
            problems.append(f"{poisoned} message(s) went to the poison queue")
        if len(stand_in.triggers) != sent:
            problems.append(
                f"{sent} sent but the Emarsys stand-in accepted {len(stand_in.triggers)} trigger(s)"
            )
        return {
            "seconds": round(elapsed, 3),
            "detection_seconds": round(detection_seconds, 3),
            "messages": messages,
            "sent": sent,
            "skipped": sum(skipped.values()),
            "skipped_by_reason": dict(sorted(skipped.items())),
            "ignored": sum(n for key, n in outcomes.items() if key.startswith("ignored")),
            "failed": sum(failures.values()) + sum(n for k, n in outcomes.items() if k.startswith("failed")),
            "poisoned": poisoned,
            "messages_per_second": round(messages / elapsed, 1) if elapsed else None,
            "concurrency": QUEUE_BATCH_SIZE,
            "retail_server_requests": sum(rs.values()),
            "retail_server_requests_per_message": round(sum(rs.values()) / messages, 2) if messages else None,
            "retail_server_requests_by_route": dict(rs.most_common()),
            "emarsys_api_requests": sum(emarsys_api.values()),
            "emarsys_trigger_requests": stand_in.trigger_requests,
            "emarsys_batch_sizes": stand_in.batch_sizes,
            "emarsys_triggers_accepted": len(stand_in.triggers),
            "emarsys_token_requests": sum(
                n for route, n in during.items() if route.startswith("POST /emarsys/auth")
            ),
            "problems": problems,
        }


def customer_request(index: int, run: str) -> func.HttpRequest:
    """``POST /api/customers`` with the demo customer, its own email and Idempotency-Key."""
    body = json.loads(json.dumps(DEMO_CUSTOMER))
    body["Customer"]["EmailAddress"] = f"bench.{run}.{index}@example.com"
    return func.HttpRequest(
        "POST",
        "http://localhost:7071/api/customers",
        headers={
            "Content-Type": "application/json",
            "Idempotency-Key": f"bench-{run}-{index}-{uuid.uuid4()}",
        },
        body=json.dumps(body).encode("utf-8"),
    )


async def create_customer_latency(state_dir: Path) -> dict[str, Any]:
    """200 sequential ``create_customer`` calls against the F&O stand-in, then 50 with 50 ms of
    injected latency on every F&O request."""
    functions = registered_functions()
    run = uuid.uuid4().hex[:8]
    async with Sandbox(seed=42, extensions=[fno.add_routes]) as sandbox:
        settings, secrets = function_settings(sandbox, state_dir, provider="preview")
        with environment(secrets):
            runtime = Runtime.create(settings)
            set_runtime(runtime)
            try:

                async def calls(count: int, offset: int) -> tuple[list[float], Counter[int]]:
                    latencies: list[float] = []
                    statuses: Counter[int] = Counter()
                    for index in range(offset, offset + count):
                        request = customer_request(index, run)
                        started = time.perf_counter()
                        response: func.HttpResponse = await functions["create_customer"](request)
                        latencies.append(time.perf_counter() - started)
                        statuses[response.status_code] += 1
                    return latencies, statuses

                started = time.perf_counter()
                fast, fast_statuses = await calls(CUSTOMER_CALLS, 0)
                fault = sandbox.faults.add(fno.PREFIX, latency=SLOW_FNO_LATENCY_SECONDS, times=None)
                slow, slow_statuses = await calls(SLOW_FNO_CUSTOMER_CALLS, CUSTOMER_CALLS)
                elapsed = time.perf_counter() - started
            finally:
                set_runtime(None)
                await runtime.close()
        problems = [
            f"{n} call(s) answered {status}"
            for status, n in (fast_statuses + slow_statuses).items()
            if status != 201
        ]
        creations = fno.stand_in(sandbox).creations
        if creations != CUSTOMER_CALLS + SLOW_FNO_CUSTOMER_CALLS:
            problems.append(f"the F&O stand-in created {creations} customers")
        return {
            "seconds": round(elapsed, 3),
            "calls": CUSTOMER_CALLS,
            "statuses": {str(k): v for k, v in sorted(fast_statuses.items())},
            "first_call_ms": round(fast[0] * 1000, 2),
            **latency_figures(fast),
            "calls_per_second": round(len(fast) / sum(fast), 1),
            "slow_fno": {
                "latency_ms": SLOW_FNO_LATENCY_SECONDS * 1000,
                "calls": SLOW_FNO_CUSTOMER_CALLS,
                "fno_requests_delayed": fault.hits,
                "statuses": {str(k): v for k, v in sorted(slow_statuses.items())},
                **latency_figures(slow),
            },
            "fno_creations": creations,
            "problems": problems,
        }


async def redaction_adversarial(state_dir: Path) -> dict[str, Any]:
    """The log redaction on 1 MB of adversarial text per pattern, before issue 8 and now."""
    # In a thread, so the scenario time limit still applies to the old patterns' long runs.
    return await asyncio.to_thread(redaction.measure)


SCENARIOS: dict[str, Scenario] = {
    "detection_full_window": detection_full_window,
    "ledger_claims": ledger_claims,
    "notify_throughput": notify_throughput,
    "create_customer_latency": create_customer_latency,
    "redaction_adversarial": redaction_adversarial,
}


async def main(selected: list[str]) -> int:
    unknown = sorted(set(selected) - set(SCENARIOS))
    if unknown:
        print(f"unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}")
        return 2
    baseline = json.loads((HERE / "baseline.json").read_text())
    results: dict[str, Any] = {}
    failures: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, scenario in SCENARIOS.items():
            if selected and name not in selected:
                continue
            async with asyncio.timeout(SCENARIO_TIMEOUT_SECONDS):
                results[name] = await scenario(Path(tmp))
            target = baseline.get(name, {}).get("max_seconds")
            verdict = "ok" if target is None or results[name]["seconds"] <= target else "SLOWER THAN TARGET"
            if results[name].get("problems"):
                verdict = "WRONG RESULT: " + "; ".join(results[name]["problems"])
            if verdict != "ok":
                failures.append(name)
            print(f"{name}: {json.dumps(results[name])} (target {target}s: {verdict})")
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "latest.json").write_text(
        json.dumps({"at": datetime.now(UTC).isoformat(), **results}, indent=2) + "\n"
    )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
