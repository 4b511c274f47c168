"""Detection at volume, in a child process of its own so its peak RSS is its own.

``python -m benchmarks.detection --info FILE --state DIR --ouns 128,067 --delay-ms 5 --deadline 60``
invokes the registered timer function ``detect_abandoned_carts`` (with a real ``TimerRequest``)
again and again, as successive timer periods would, until one invocation reads no cart it had not
read before, or the deadline passes (the invocation then in progress is cancelled: detection saves
its watermark per page, so that loses nothing). It prints one JSON object: carts found (distinct
carts the sandbox served to date-bounded searches), seconds, the store's counts, peak RSS, CPU time;
with ``--profile FILE`` the cProfile top entries go to FILE.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import pstats
import resource
import sys
import time
from pathlib import Path
from typing import Any

from azure.functions.timer import TimerRequest

from benchmarks.harness import (
    SandboxProcess,
    app_configuration,
    environment,
    measured_runtime,
    registered_functions,
    upstream_requests,
)
from sandbox.bindings import OutBinding
from shared.runtime import set_runtime

MAX_INVOCATIONS = 20


def served(stats: dict[str, Any], ouns: list[str]) -> int:
    return sum(int(stats["carts_served"].get(oun, 0)) for oun in ouns)


async def detect(args: argparse.Namespace) -> dict[str, Any]:
    info = json.loads(Path(args.info).read_text())  # noqa: ASYNC240 - before anything is measured
    sandbox = SandboxProcess(info=info, process=None)  # type: ignore[arg-type]  # not ours to stop
    ouns = args.ouns.split(",")
    settings, secrets = app_configuration(
        info,
        Path(args.state) / "detection.sqlite3",
        operating_unit_numbers=args.ouns,
        max_carts_per_run=100_000,
    )
    functions = registered_functions()
    profile = cProfile.Profile() if args.profile else None
    with environment(secrets):
        runtime, store = measured_runtime(settings, args.delay_ms / 1000)
        set_runtime(runtime)
        invocations, queued, completed = 0, 0, False
        await sandbox.forget_served()  # an earlier run over the same sandbox read these carts too
        before = await sandbox.stats()
        read = served(before, ouns)
        cpu = time.process_time()
        started = time.perf_counter()
        try:
            async with asyncio.timeout(args.deadline):
                if profile is not None:
                    profile.enable()
                while invocations < MAX_INVOCATIONS:
                    out = OutBinding()
                    await functions["detect_abandoned_carts"](TimerRequest(past_due=False), out)
                    invocations += 1
                    queued += len(out.get() or [])
                    now_read = served(await sandbox.stats(), ouns)
                    if now_read == read:
                        completed = True
                        break
                    read = now_read
        except TimeoutError:
            pass
        finally:
            if profile is not None:
                profile.disable()
            elapsed = time.perf_counter() - started
            cpu = time.process_time() - cpu
            set_runtime(None)
            await runtime.close()
        after = await sandbox.stats()
    found = served(after, ouns) - served(before, ouns)
    requests = upstream_requests(before, after)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    figures = store.figures()
    result: dict[str, Any] = {
        "ouns": ouns,
        "carts_in_channels": sum(int(after["bulk_carts"].get(oun, 0)) for oun in ouns),
        "carts_found": found,
        "completed": completed,
        "invocations": invocations,
        "messages_queued": queued,
        "seconds": round(elapsed, 3),
        "carts_per_second": round(found / elapsed, 1) if elapsed else None,
        "cpu_seconds": round(cpu, 3),
        "cpu_share_of_wall": round(cpu / elapsed, 2) if elapsed else None,
        "store_delay_ms": args.delay_ms,
        **figures,
        "round_trips_per_cart": round(figures["round_trips"] / found, 3) if found else None,
        "critical_path_round_trips_per_cart": round(figures["critical_path_round_trips"] / found, 3)
        if found
        else None,
        "request_units_per_cart": round(figures["request_units"] / found, 2) if found else None,
        "upstream_requests": sum(requests.values()),
        "upstream_requests_by_route": dict(requests.most_common(6)),
        # Linux reports ru_maxrss in KiB.
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
    }
    if profile is not None:
        text = io.StringIO()
        stats = pstats.Stats(profile, stream=text)
        stats.sort_stats("cumulative").print_stats(args.profile_entries)
        stats.sort_stats("tottime").print_stats(args.profile_entries)
        Path(args.profile).write_text(text.getvalue())  # noqa: ASYNC240 - after the measurement
    return result


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.detection")
    parser.add_argument("--info", required=True, help="the sandbox's --info-file")
    parser.add_argument("--state", required=True, help="a directory for the SQLite state store")
    parser.add_argument("--ouns", default="128,067")
    parser.add_argument("--delay-ms", type=float, default=0.0, help="state-store delay per round trip")
    parser.add_argument("--deadline", type=float, default=60.0, help="seconds before detection is stopped")
    parser.add_argument("--profile", help="write the cProfile top entries to this file")
    parser.add_argument("--profile-entries", type=int, default=25)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(detect(args))))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
