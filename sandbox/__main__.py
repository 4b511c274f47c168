"""``python -m sandbox``: serve the stand-ins until Ctrl-C and print how to point the app at them.

Every optional stand-in module present in the package (orders, F&O, Emarsys, SendGrid, webhook,
Microsoft Graph for scripts/configure_dynamics) is
mounted through its ``add_routes(app, sandbox)``; one with an ``env(sandbox)`` function adds its
own settings block.

For the benchmarks (``benchmarks/``), which run it as a separate process: ``--latency-ms`` delays
every upstream request, ``--carts OUN=COUNT`` adds generated-on-demand carts to a channel,
``--info-file`` writes the URLs, CA path and credentials as JSON, ``GET /_sandbox/stats``
answers what reached the stand-ins and ``DELETE /_sandbox/stats/served`` forgets which carts
date-bounded searches served.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import importlib.util
import json
import logging
import os
import shutil
import signal
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from aiohttp import web

from sandbox.retail_server import MEDIA_FAULT_KINDS, check_media_fault
from sandbox.server import Extension, Sandbox

# What local.settings.sample.json expects: `func start` works against `python -m sandbox` as is.
DEFAULT_PORT = 7443
STABLE_CA_PATH = Path(".state/sandbox-ca.pem")
OPTIONAL_STAND_INS = (
    "sandbox.orders",
    "sandbox.fno",
    "sandbox.emarsys",
    "sandbox.sendgrid",
    "sandbox.webhook",
    "sandbox.graph",
)
DEFAULT_LATENCY_MS = 20.0
STATS_PATH = "/_sandbox/stats"


def optional_modules() -> list[ModuleType]:
    found = []
    for name in OPTIONAL_STAND_INS:
        if importlib.util.find_spec(name) is not None:
            module = importlib.import_module(name)
            if callable(getattr(module, "add_routes", None)):
                found.append(module)
    return found


def describe(sandbox: Sandbox, modules: list[ModuleType]) -> str:
    names = ", ".join(["entra", "retail_server", *(m.__name__.split(".")[-1] for m in modules)])
    lines = [
        f"Sandbox listening on {sandbox.base_url}",
        f"  Entra ID authority   {sandbox.authority}",
        f"  Retail Server API    {sandbox.retail_server_url}/Commerce/  (OUN 128 or 067, api-version=7.3)",
        f"  client id / secret   {sandbox.client_id} / {sandbox.client_secret}",
        f"  CA certificate       {sandbox.ca_path}",
        f"  stand-ins            {names}",
        "",
        "# app settings for this sandbox (e.g. `export` them or paste into local.settings.json)",
        *(f"{key}={value}" for key, value in sandbox.env().items()),
    ]
    for module in modules:
        env: Callable[[Sandbox], dict[str, str]] | None = getattr(module, "env", None)
        if env is not None:
            lines.append(
                f"# {module.__name__.split('.')[-1]} (email providers: keep one EMAIL_PROVIDER block)"
            )
            lines.extend(f"{key}={value}" for key, value in env(sandbox).items())
    # The platform sets IDENTITY_* in Azure; with them, the app needs no client secret.
    lines.append("# no client secret: the managed identity as a federated credential (optional)")
    lines.append("ENTRA_CREDENTIAL=federated")
    lines.extend(f"{key}={value}" for key, value in sandbox.managed_identity.env().items())
    lines += ["", "Press Ctrl-C to stop."]
    return "\n".join(lines)


def media_fault_kind(value: str) -> str:
    try:
        return check_media_fault(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def publish_ca(ca_path: Path) -> None:
    STABLE_CA_PATH.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(ca_path, STABLE_CA_PATH)


def cart_volume(value: str) -> tuple[str, int]:
    oun, _, count = value.partition("=")
    if not oun or not count.isdigit() or not 1 <= int(count) <= 1_000_000:
        raise argparse.ArgumentTypeError(f"expected OUN=COUNT with COUNT 1-1000000, not {value!r}")
    return oun, int(count)


def upstream_prefixes(modules: list[ModuleType]) -> list[str]:
    """The path prefixes of every stand-in (the orders routes live under Retail Server's)."""
    prefixes = ["/entra", "/rs"]
    for module in modules:
        prefix = getattr(module, "PREFIX", None)
        if isinstance(prefix, str) and prefix not in prefixes:
            prefixes.append(prefix)
    return prefixes


def stats(sandbox: Sandbox, modules: list[ModuleType]) -> dict[str, Any]:
    """What reached the stand-ins so far: requests by ``METHOD /path``, tokens, carts served."""
    recorded: dict[str, int] = {}
    for module in modules:
        finder = getattr(module, "stand_in", None)
        if finder is None:
            continue
        stand_in = finder(sandbox)
        name = module.__name__.split(".")[-1]
        for attribute in ("mails", "triggers"):
            if isinstance(getattr(stand_in, attribute, None), list):
                recorded[f"{name}.{attribute}"] = len(getattr(stand_in, attribute))
        for attribute in ("creations", "requests", "trigger_requests"):
            value = getattr(stand_in, attribute, None)
            if isinstance(value, int):
                recorded[f"{name}.{attribute}"] = value
    return {
        "requests": dict(sandbox.stats.requests),
        "token_requests": dict(sandbox.stats.token_requests),
        "carts_served": {oun: len(ids) for oun, ids in sandbox.data.served.items()},
        "bulk_carts": {oun: bulk.count for oun, bulk in sandbox.data.bulk.items()},
        "stand_ins": recorded,
        # The stand-ins' own CPU time: a benchmark checks that it measured the app, not a
        # saturated sandbox.
        "cpu_seconds": time.process_time(),
    }


def stats_extension(modules: list[ModuleType]) -> Extension:
    def add(app: web.Application, sandbox: Sandbox) -> None:
        async def answer(request: web.Request) -> web.Response:
            return web.json_response(stats(sandbox, modules))

        async def forget_served(request: web.Request) -> web.Response:
            # A benchmark run with a fresh ledger reads the same carts again: count them afresh.
            sandbox.data.served.clear()
            return web.Response(status=204)

        app.router.add_get(STATS_PATH, answer)
        app.router.add_delete(STATS_PATH + "/served", forget_served)

    return add


def info(sandbox: Sandbox, modules: list[ModuleType]) -> dict[str, Any]:
    """What a client in another process needs: URLs, CA, credentials and each stand-in's settings."""
    blocks: dict[str, dict[str, str]] = {}
    for module in modules:
        env: Callable[[Sandbox], dict[str, str]] | None = getattr(module, "env", None)
        if env is not None:
            blocks[module.__name__.split(".")[-1]] = env(sandbox)
    return {
        "pid": os.getpid(),
        "base_url": sandbox.base_url,
        "stats_url": sandbox.base_url + STATS_PATH,
        "ca_path": str(sandbox.ca_path),
        "tenant_id": sandbox.tenant_id,
        "client_id": sandbox.client_id,
        "client_secret": sandbox.client_secret,
        "authority_host": sandbox.authority_host,
        "retail_server_url": sandbox.retail_server_url,
        "retail_server_audience": sandbox.retail_server_audience,
        "now": sandbox.now.isoformat(),
        "env": sandbox.env(),
        "stand_ins": blocks,
    }


def write_info(path: Path, values: dict[str, Any]) -> None:
    # Written whole, then renamed: a reader polling for the file never sees half of it.
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(values, indent=2))
    partial.replace(path)


async def serve(
    seed: int,
    port: int,
    media_fault: str | None = None,
    *,
    latency_ms: float = 0.0,
    carts: list[tuple[str, int]] | None = None,
    info_file: Path | None = None,
    access_log: bool = True,
) -> None:
    modules = optional_modules()
    extensions: list[Extension] = [module.add_routes for module in modules]
    extensions.append(stats_extension(modules))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signum, stop.set)
    async with Sandbox(
        seed=seed, extensions=extensions, port=port, access_log=access_log, media_fault=media_fault
    ) as sandbox:
        for oun, count in carts or []:
            sandbox.data.add_bulk_carts(oun, count)
        if carts:
            # The bulk customers are Emarsys contacts already, as a retailer's synchronised
            # contact base would be: a trigger for them needs no contact upsert first.
            for module in modules:
                if module.__name__.endswith(".emarsys"):
                    module.stand_in(sandbox).directory = sandbox.data.is_bulk_email
        if latency_ms > 0:
            for prefix in upstream_prefixes(modules):
                sandbox.faults.add(prefix, latency=latency_ms / 1000, times=None)
        if info_file is not None:
            # A benchmark's sandbox: its CA stays private, a `make sandbox` elsewhere keeps its own.
            await asyncio.to_thread(write_info, info_file, info(sandbox, modules))
        else:
            # local.settings.sample.json trusts the CA at this fixed path (EXTRA_CA_BUNDLE).
            await asyncio.to_thread(publish_ca, sandbox.ca_path)
        print(describe(sandbox, modules), flush=True)
        if media_fault:
            print(f"Every Products(id)/GetMediaLocations call fails: {media_fault}.", flush=True)
        if latency_ms > 0:
            print(f"Every upstream request waits {latency_ms:g} ms.", flush=True)
        for oun, count in carts or []:
            print(f"Channel {oun}: {count} more carts, generated on demand.", flush=True)
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m sandbox", description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=42, help="seed of the generated data (default 42)")
    parser.add_argument(
        "--port",
        type=int,
        default=DEFAULT_PORT,
        help=f"port on 127.0.0.1 (default {DEFAULT_PORT}, what local.settings.sample.json names; 0: any)",
    )
    parser.add_argument(
        "--media-fault",
        default=os.environ.get("SANDBOX_MEDIA_FAULT") or None,
        metavar="KIND",
        type=media_fault_kind,
        help="make every Products(id)/GetMediaLocations call fail: "
        f"{', '.join(MEDIA_FAULT_KINDS)} (default: $SANDBOX_MEDIA_FAULT, else none)",
    )
    parser.add_argument(
        "--latency-ms",
        type=float,
        default=DEFAULT_LATENCY_MS,
        metavar="MS",
        help=f"delay every upstream request by MS milliseconds (default {DEFAULT_LATENCY_MS:g}; 0: none)",
    )
    parser.add_argument(
        "--carts",
        action="append",
        type=cart_volume,
        default=[],
        metavar="OUN=COUNT",
        help="add COUNT carts (one customer each, generated on demand) to channel OUN; repeatable",
    )
    parser.add_argument(
        "--info-file",
        type=Path,
        metavar="PATH",
        help="write the URLs, CA path and credentials as JSON to PATH (the CA is then not published)",
    )
    parser.add_argument("--quiet", action="store_true", help="no access log")
    args = parser.parse_args()
    if args.latency_ms < 0:
        parser.error("--latency-ms must not be negative")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(
            serve(
                args.seed,
                args.port,
                args.media_fault,
                latency_ms=args.latency_ms,
                carts=args.carts,
                info_file=args.info_file,
                access_log=not args.quiet,
            )
        )


if __name__ == "__main__":
    main()
