"""``python -m sandbox``: serve the stand-ins until Ctrl-C and print how to point the app at them.

Every optional stand-in module present in the package (F&O, Emarsys, SendGrid, webhook) is
mounted through its ``add_routes(app, sandbox)``; one with an ``env(sandbox)`` function adds its
own settings block.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import importlib.util
import logging
import os
import shutil
import signal
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

from sandbox.retail_server import MEDIA_FAULT_KINDS, check_media_fault
from sandbox.server import Extension, Sandbox

# What local.settings.sample.json expects: `func start` works against `python -m sandbox` as is.
DEFAULT_PORT = 7443
STABLE_CA_PATH = Path(".state/sandbox-ca.pem")
OPTIONAL_STAND_INS = ("sandbox.fno", "sandbox.emarsys", "sandbox.sendgrid", "sandbox.webhook")


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


async def serve(seed: int, port: int, media_fault: str | None = None) -> None:
    modules = optional_modules()
    extensions: list[Extension] = [module.add_routes for module in modules]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signum, stop.set)
    async with Sandbox(
        seed=seed, extensions=extensions, port=port, access_log=True, media_fault=media_fault
    ) as sandbox:
        # local.settings.sample.json trusts the CA at this fixed path (EXTRA_CA_BUNDLE).
        await asyncio.to_thread(publish_ca, sandbox.ca_path)
        print(describe(sandbox, modules), flush=True)
        if media_fault:
            print(f"Every Products(id)/GetMediaLocations call fails: {media_fault}.", flush=True)
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
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.seed, args.port, args.media_fault))


if __name__ == "__main__":
    main()
