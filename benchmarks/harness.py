"""What every scenario shares: the sandbox in its own process, the app's settings for it, the
functions registered on ``function_app.app``, and the state store behind ``LatencyStore``."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import ssl
import sys
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from benchmarks.store import LatencyStore
from shared.runtime import Runtime
from shared.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
SANDBOX_START_SECONDS = 60
STATS_PREFIX = "/_sandbox/"


@dataclass
class SandboxProcess:
    """A ``python -m sandbox`` child: what its ``--info-file`` says, and its request counts."""

    info: dict[str, Any]
    process: asyncio.subprocess.Process

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.info["ca_path"])

    async def stats(self) -> dict[str, Any]:
        connector = aiohttp.TCPConnector(ssl=self.ssl_context())
        timeout = aiohttp.ClientTimeout(total=30)
        async with (
            aiohttp.ClientSession(connector=connector, timeout=timeout) as session,
            session.get(self.info["stats_url"]) as response,
        ):
            response.raise_for_status()
            stats: dict[str, Any] = await response.json()
            return stats

    async def forget_served(self) -> None:
        connector = aiohttp.TCPConnector(ssl=self.ssl_context())
        async with (
            aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as session,
            session.delete(self.info["stats_url"] + "/served") as response,
        ):
            response.raise_for_status()


def upstream_requests(before: dict[str, Any], after: dict[str, Any]) -> Counter[str]:
    """Requests that reached a stand-in between two ``stats()`` (the stats route itself left out)."""
    counts = Counter(after["requests"])
    counts.subtract(before["requests"])
    return Counter({k: n for k, n in counts.items() if n > 0 and STATS_PREFIX not in k})


def stand_in_delta(before: dict[str, Any], after: dict[str, Any], name: str) -> int:
    return int(after["stand_ins"].get(name, 0)) - int(before["stand_ins"].get(name, 0))


@contextlib.asynccontextmanager
async def sandbox_process(
    directory: Path, *, seed: int, latency_ms: float, carts: dict[str, int] | None = None
) -> AsyncIterator[SandboxProcess]:
    """``python -m sandbox`` on an ephemeral 127.0.0.1 port, stopped (SIGTERM, then SIGKILL) after."""
    info_file = directory / f"sandbox-{uuid.uuid4().hex[:8]}.json"
    arguments = ["--port", "0", "--quiet", "--seed", str(seed), "--latency-ms", str(latency_ms)]
    for oun, count in (carts or {}).items():
        arguments += ["--carts", f"{oun}={count}"]
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sandbox",
        *arguments,
        "--info-file",
        str(info_file),
        cwd=ROOT,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        async with asyncio.timeout(SANDBOX_START_SECONDS):
            while not info_file.exists():
                if process.returncode is not None:
                    raise RuntimeError(f"the sandbox exited with {process.returncode} before it started")
                await asyncio.sleep(0.05)
        info = json.loads(info_file.read_text())
        yield SandboxProcess(info=info, process=process)
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(10):
                    await process.wait()
            except TimeoutError:
                process.kill()
                await process.wait()


def app_configuration(
    info: dict[str, Any], state_path: Path, *, provider: str = "sendgrid", **overrides: Any
) -> tuple[Settings, dict[str, str]]:
    """The settings that point the app at the sandbox process (as sandbox/demo.py's do) and the
    secrets to put in the environment."""
    values: dict[str, Any] = {
        "entra_tenant_id": info["tenant_id"],
        "entra_authority_host": info["authority_host"],
        "entra_client_id": info["client_id"],
        "retail_server_url": info["retail_server_url"],
        "retail_server_audience": info["retail_server_audience"],
        "operating_unit_numbers": "128,067",
        "extra_ca_bundle": info["ca_path"],
        "state_store": "sqlite",
        "sqlite_path": state_path,
        "site_url": "https://shop.example.com",
        "image_base_url": "https://images.example.com/cms/imageFileData/search?fileName=/",
        "return_to_cart_url_template": "https://shop.example.com/cart?cartId={cartId}&channel={channelId}",
        "unsubscribe_url_template": "https://shop.example.com/unsubscribe?customer={customerId}",
        "email_provider": "preview",
        "preview_dir": state_path.parent / "previews",
    }
    secrets = {"ENTRA_CLIENT_SECRET": info["client_secret"]}
    values["fno_url"] = info["base_url"] + "/fno"
    if provider != "preview":
        for key, value in info["stand_ins"][provider].items():
            if key.lower() in Settings.model_fields:
                values[key.lower()] = value
            else:
                secrets[key] = value
    values.update(overrides)
    return Settings(**values), secrets


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


def measured_runtime(settings: Settings, delay_seconds: float) -> tuple[Runtime, LatencyStore]:
    """``Runtime.create(settings)`` with its state store behind a ``LatencyStore``."""
    runtime = Runtime.create(settings)
    store = LatencyStore(runtime.store, delay=delay_seconds)
    runtime.store = store  # delegates every DocumentStore method by name
    return runtime, store


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
        # function_app sets the app's loggers to INFO; a line per cart would be the benchmark.
        for name in ("", "shared"):
            logging.getLogger(name).setLevel(logging.ERROR)
    return _functions


def host_queue_settings() -> tuple[int, int]:
    """``batchSize`` and ``newBatchThreshold`` of extensions.queues in host.json."""
    queues = json.loads((ROOT / "host.json").read_text())["extensions"]["queues"]
    batch = int(queues.get("batchSize", 16))
    return batch, int(queues.get("newBatchThreshold", batch // 2))
