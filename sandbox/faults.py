"""Fault injection for every stand-in: error statuses, latency, hangs and connection resets.

A fault names a route as ``"/path"`` (any method) or ``"METHOD /path"``; the path matches as a
prefix of the request path, so ``"/rs/Commerce/Carts"`` covers ``/rs/Commerce/Carts/Search``.
The first matching fault applies; one with ``times`` set is used up after that many requests.
Because it is an application middleware, it also covers routes that extensions add later.

Most faults stop the request before the stand-in sees it. ``timeout_after`` and ``reset_after``
let the stand-in process it (an email is accepted, a trigger recorded) and then lose the answer:
held past the client's timeout, or the connection reset. That is the case a client cannot tell
from "not processed", and the one a provider without de-duplication must never repeat.
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from multidict import CIMultiDict


@dataclass
class Fault:
    method: str | None
    path_prefix: str
    status: int | None
    times: int | None
    latency: float
    timeout: bool
    reset: bool
    headers: dict[str, str] = field(default_factory=dict)
    body: str | None = None
    stream_bytes: int | None = None
    hits: int = 0
    # After the stand-in processed the request: hold its answer / reset the connection.
    timeout_after: bool = False
    reset_after: bool = False
    # What a streamed body got onto the connection before the client stopped reading.
    bytes_sent: int = 0

    def matches(self, method: str, path: str) -> bool:
        return (self.method is None or self.method == method) and path.startswith(self.path_prefix)


class FaultInjector:
    def __init__(self, *, timeout_seconds: float = 60.0) -> None:
        # Longer than any client timeout the app or its tests configure.
        self.timeout_seconds = timeout_seconds
        self._faults: list[Fault] = []

    def add(
        self,
        route: str,
        *,
        status: int | None = None,
        times: int | None = 1,
        latency: float = 0.0,
        timeout: bool = False,
        reset: bool = False,
        headers: Mapping[str, str] | None = None,
        body: str | None = None,
        timeout_after: bool = False,
        reset_after: bool = False,
        stream_bytes: int | None = None,
    ) -> Fault:
        """Inject a fault into the next ``times`` matching requests (every one when ``times`` is None).

        ``status`` answers with that status instead of the stand-in (``body``/``headers`` optional);
        ``latency`` delays the request; ``timeout`` holds it for ``timeout_seconds``; ``reset``
        drops the connection without an answer. Latency alone lets the request through afterwards.
        ``timeout_after`` and ``reset_after`` let the stand-in process the request first, then hold
        the answer for ``timeout_seconds`` or drop the connection: processed, but never answered.
        ``stream_bytes`` answers ``status`` (200 when unset) with a JSON body of about that many
        bytes, chunked and without ``Content-Length``, written as the client reads it; the fault's
        ``bytes_sent`` then tells how much of it the client took before it hung up.
        """
        if (timeout_after or reset_after) and (status is not None or timeout or reset):
            raise ValueError(
                "timeout_after and reset_after let the request through; no status, timeout or reset"
            )
        method, _, path = route.partition(" ") if " " in route else ("", "", route)
        if not path.startswith("/"):
            raise ValueError(f"route must be '/path' or 'METHOD /path', got {route!r}")
        if times is not None and times < 1:
            raise ValueError("times must be at least 1, or None for every request")
        if stream_bytes is not None and stream_bytes < 0:
            raise ValueError("stream_bytes must not be negative")
        fault = Fault(
            method=method.upper() or None,
            path_prefix=path,
            status=status,
            times=times,
            latency=latency,
            timeout=timeout,
            reset=reset,
            headers=dict(headers or {}),
            body=body,
            timeout_after=timeout_after,
            reset_after=reset_after,
            stream_bytes=stream_bytes,
        )
        self._faults.append(fault)
        return fault

    def clear(self) -> None:
        self._faults.clear()

    @property
    def active(self) -> list[Fault]:
        return list(self._faults)

    def take(self, method: str, path: str) -> Fault | None:
        """The fault for this request, counting it as used."""
        for fault in self._faults:
            if fault.matches(method, path):
                fault.hits += 1
                if fault.times is not None and fault.hits >= fault.times:
                    self._faults.remove(fault)
                return fault
        return None

    async def apply(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        fault = self.take(request.method, request.path)
        if fault is None:
            return await handler(request)
        if fault.latency:
            await asyncio.sleep(fault.latency)
        if fault.timeout:
            await asyncio.sleep(self.timeout_seconds)
        if fault.reset:
            _reset_connection(request)
            # The handler is cancelled once the server notices the lost connection.
            await asyncio.sleep(self.timeout_seconds)
            raise web.HTTPServiceUnavailable()
        if fault.stream_bytes is not None:
            return await _stream(request, fault, fault.stream_bytes)
        if fault.status is None:
            response = await handler(request)
            if fault.timeout_after:
                # The client gives up first; the server notices and cancels this wait.
                await asyncio.sleep(self.timeout_seconds)
            if fault.reset_after:
                _reset_connection(request)
                await asyncio.sleep(self.timeout_seconds)
                raise web.HTTPServiceUnavailable()
            return response
        headers = CIMultiDict(fault.headers)
        body = fault.body
        if body is None:
            body = json.dumps({"error": "injected_fault", "status": fault.status})
        if "Content-Type" not in headers:
            json_like = body.lstrip().startswith(("{", "["))
            headers["Content-Type"] = "application/json" if json_like else "text/plain"
        return web.Response(status=fault.status, text=body, headers=headers)

    def middleware(self) -> Middleware:
        @web.middleware
        async def inject_faults(request: web.Request, handler: Handler) -> web.StreamResponse:
            return await self.apply(request, handler)

        return inject_faults


_STREAM_PIECE = b'"' + b"x" * (64 * 1024 - 3) + b'",'


async def _stream(request: web.Request, fault: Fault, size: int) -> web.StreamResponse:
    """A JSON collection of about ``size`` bytes, chunked, produced only as fast as it is read."""
    response = web.StreamResponse(status=fault.status or 200, headers=CIMultiDict(fault.headers))
    response.content_type = "application/json"
    response.enable_chunked_encoding()
    await response.prepare(request)
    pieces = [b'{"value":[', *([_STREAM_PIECE] * (size // len(_STREAM_PIECE))), b'""]}']
    try:
        for piece in pieces:
            await response.write(piece)
            fault.bytes_sent += len(piece)
        await response.write_eof()
    except ConnectionError:
        pass  # the client hung up: that is what the fault is there to show
    return response


def _reset_connection(request: web.Request) -> None:
    """Drop the connection with a TCP RST (linger 0), the way a failing load balancer does."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()
