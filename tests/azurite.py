"""Azurite's queue service for the tests: a real ``azurite-queue`` process (npm package ``azurite``,
installed by ``make test`` through ``npm ci``) on a free loopback port, in memory, plus queue clients
that use the message encoding ``host.json`` declares, as the Functions host does.

The fixture that starts it lives in ``tests/integration/conftest.py`` (``azurite_connection_string``).
"""

from __future__ import annotations

import ctypes
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from azure.storage.queue import TextBase64DecodePolicy, TextBase64EncodePolicy
from azure.storage.queue.aio import QueueClient

ROOT = Path(__file__).resolve().parent.parent
AZURITE_QUEUE = ROOT / "node_modules" / ".bin" / "azurite-queue"
HOST_JSON = ROOT / "host.json"

# Azurite's well-known development account (public, documented by Microsoft; not a secret).
ACCOUNT_NAME = "devstoreaccount1"
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="

START_TIMEOUT_SECONDS = 30.0
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
STOP_TIMEOUT_SECONDS = 10.0


class AzuriteError(RuntimeError):
    """Azurite could not be started; the message says why and holds its output."""


def free_port() -> int:
    """A port nothing listens on right now: the one the kernel picks for a socket bound to port 0."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def connection_string(port: int) -> str:
    return (
        f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT_NAME};AccountKey={ACCOUNT_KEY};"
        f"QueueEndpoint=http://127.0.0.1:{port}/{ACCOUNT_NAME};"
    )


def _azurite_queue_answers(port: int) -> bool:
    """Azurite's queue service answers on the port (an unsigned request: 403 from ``Azurite-Queue``).

    Checking the ``Server`` header, not only that the port accepts connections, tells Azurite apart
    from another program that took the port between choosing and binding it."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=0.5)
    try:
        connection.request("GET", f"/{ACCOUNT_NAME}?comp=list")
        response = connection.getresponse()
        response.read()
        return (response.getheader("Server") or "").startswith("Azurite-Queue")
    except (OSError, http.client.HTTPException):
        return False
    finally:
        connection.close()


@dataclass
class AzuriteQueue:
    """One running ``azurite-queue`` process."""

    process: subprocess.Popen[bytes]
    port: int
    stdout_path: Path
    stderr_path: Path

    @property
    def connection_string(self) -> str:
        return connection_string(self.port)

    def output(self) -> str:
        parts = []
        for name, path in (("stderr", self.stderr_path), ("stdout", self.stdout_path)):
            text = path.read_text("utf-8", errors="replace").strip() if path.exists() else ""
            parts.append(f"--- azurite {name} ---\n{text or '(empty)'}")
        return "\n".join(parts)

    def stop(self) -> None:
        if self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=STOP_TIMEOUT_SECONDS)


def _die_with_parent() -> None:
    """In the child before exec (Linux): SIGTERM it when the test process dies, even by SIGKILL,
    so an interrupted or killed test run leaves no Azurite behind."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        return


def missing_azurite_message() -> str | None:
    """Why Azurite cannot start here, or None when its launcher is installed."""
    if AZURITE_QUEUE.exists():
        return None
    shown = AZURITE_QUEUE.relative_to(ROOT) if AZURITE_QUEUE.is_relative_to(ROOT) else AZURITE_QUEUE
    return (
        f"{shown} is missing: the Azurite queue emulator is not installed. "
        "Run `make test` (it runs `npm ci`, which installs the azurite devDependency of package.json), "
        "or `npm ci` in the repository root."
    )


def start_azurite_queue(workdir: Path, *, attempts: int = 3) -> AzuriteQueue:
    """Start the queue service on a free port and wait (bounded) until it answers there.

    A port taken between choosing and binding it makes Azurite exit with EADDRINUSE; another
    port is tried then. Any other failure raises :class:`AzuriteError` with Azurite's output."""
    problem = missing_azurite_message()
    if problem is not None:
        raise AzuriteError(problem)
    last: AzuriteError | None = None
    for attempt in range(attempts):
        try:
            return _start_once(workdir / f"attempt-{attempt}")
        except _PortTakenError as exc:
            last = AzuriteError(str(exc))
    assert last is not None
    raise last


class _PortTakenError(AzuriteError):
    pass


def _start_once(workdir: Path) -> AzuriteQueue:
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = dict(os.environ)
    # A developer's AZURITE_ACCOUNTS would replace devstoreaccount1, which the connection string names.
    env.pop("AZURITE_ACCOUNTS", None)
    command = [
        str(AZURITE_QUEUE),
        "--queueHost",
        "127.0.0.1",
        "--queuePort",
        str(port),
        "--inMemoryPersistence",
        "--skipApiVersionCheck",
        "--disableTelemetry",
        "--silent",
    ]
    stdout_path, stderr_path = workdir / "azurite.stdout.log", workdir / "azurite.stderr.log"
    with stdout_path.open("wb") as stdout, stderr_path.open("wb") as stderr:
        try:
            process = subprocess.Popen(  # noqa: S603 - a fixed command line of our own
                command,
                cwd=workdir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )
        except OSError as exc:
            raise AzuriteError(
                f"could not run {AZURITE_QUEUE} ({exc}); it needs Node.js 20 (`node`) on PATH"
            ) from exc
    azurite = AzuriteQueue(process, port, stdout_path, stderr_path)
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            output = azurite.output()
            error = _PortTakenError if "EADDRINUSE" in output else AzuriteError
            raise error(
                f"azurite-queue exited with status {process.returncode} before listening on "
                f"127.0.0.1:{port}\ncommand: {' '.join(command)}\n{output}"
            )
        if _azurite_queue_answers(port):
            return azurite
        time.sleep(0.1)
    azurite.stop()
    raise AzuriteError(
        f"azurite-queue did not accept connections on 127.0.0.1:{port} within "
        f"{START_TIMEOUT_SECONDS:.0f} s\ncommand: {' '.join(command)}\n{azurite.output()}"
    )


# ----- queue clients with the host's message encoding


def host_message_encoding() -> str:
    """``extensions.queues.messageEncoding`` of host.json; the Functions host's default is base64."""
    host = json.loads(HOST_JSON.read_text("utf-8"))
    encoding: str = host.get("extensions", {}).get("queues", {}).get("messageEncoding", "base64")
    return encoding.lower()


def encoding_policies(encoding: str) -> dict[str, Any]:
    """``QueueClient`` keyword arguments that encode and decode messages as the host does."""
    if encoding == "base64":
        return {
            "message_encode_policy": TextBase64EncodePolicy(),
            "message_decode_policy": TextBase64DecodePolicy(),
        }
    if encoding == "none":
        return {"message_encode_policy": None, "message_decode_policy": None}
    raise ValueError(f"host.json messageEncoding {encoding!r} is neither 'base64' nor 'none'")


def host_queue_client(conn_str: str, queue_name: str) -> QueueClient:
    """A queue client that reads and writes messages the way the Functions host's bindings do."""
    return QueueClient.from_connection_string(
        conn_str, queue_name, **encoding_policies(host_message_encoding())
    )


def raw_queue_client(conn_str: str, queue_name: str) -> QueueClient:
    """A queue client that shows message content exactly as stored (no encoding, no decoding)."""
    return QueueClient.from_connection_string(conn_str, queue_name)
