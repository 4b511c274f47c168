"""The process's one HTTP client: an aiohttp session, one retry policy and typed upstream errors.

Every adapter (Retail Server, F&O, email providers) sends through :class:`HttpClient`, so timeouts,
retries and error reporting behave the same everywhere. Errors carry the upstream status and the
correlation id, never the request's headers or body, which may hold tokens or personal data.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import random
import ssl
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from shared import telemetry

if TYPE_CHECKING:
    # aiohttp takes about 100 ms to import (most of it building its default TLS contexts): it
    # loads when the process's session is built, not when the app is imported.
    import aiohttp

logger = logging.getLogger(__name__)

RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})
# A non-idempotent call (creating a customer) is retried only when the upstream says it did not
# process the request at all; a 500 or a timeout may hide a completed creation.
RETRYABLE_STATUSES_NON_IDEMPOTENT = frozenset({429, 503})
_CORRELATION_HEADERS = ("request-id", "x-ms-request-id", "ms-cv", "x-correlation-id", "x-request-id")
_BODY_EXCERPT = 300
# The MAX_RESPONSE_BYTES default: a JSON body read and parsed into models takes about eight times
# its size in memory (a 178 MB Carts/Search page took 1.5 GB of RSS, an 8 MB one 63 MB), so a few
# MB keep a worker, with its concurrent invocations, well inside a Flex instance.
DEFAULT_MAX_RESPONSE_BYTES = 8 * 1024 * 1024
_READ_CHUNK = 64 * 1024


class UpstreamError(Exception):
    """An upstream call failed. ``str()`` is safe to log: no secrets, no request data."""

    def __init__(
        self,
        service: str,
        message: str,
        *,
        status: int | None = None,
        correlation_id: str,
        upstream_request_id: str | None = None,
        retry_after: float | None = None,
        may_have_arrived: bool = True,
    ) -> None:
        self.service = service
        self.status = status
        # False only when the request certainly never reached the upstream (no connection was
        # made): then even a non-idempotent call was not processed. A timeout or a reset after
        # the request was written leaves it True: the upstream may have acted on it.
        self.may_have_arrived = may_have_arrived
        self.correlation_id = correlation_id
        self.upstream_request_id = upstream_request_id
        self.retry_after = retry_after
        status_part = f" (HTTP {status})" if status is not None else ""
        super().__init__(f"{service}{status_part}: {message} [correlation id {correlation_id}]")


class UpstreamStatusError(UpstreamError):
    """The upstream answered with a status the caller did not expect."""

    def __init__(self, service: str, response: UpstreamResponse, message: str | None = None) -> None:
        self.response = response
        super().__init__(
            service,
            message or f"unexpected status {response.status}",
            status=response.status,
            correlation_id=response.correlation_id,
            upstream_request_id=response.upstream_request_id,
            retry_after=response.retry_after(),
        )


class UpstreamResponseTooLargeError(UpstreamError):
    """The upstream's answer is larger than ``MAX_RESPONSE_BYTES``; it was not read to its end."""

    def __init__(
        self, service: str, route: str, *, limit: int, status: int, declared: int | None, correlation_id: str
    ) -> None:
        self.route = route
        self.limit = limit
        self.declared = declared
        size = f"{declared} bytes (Content-Length)" if declared is not None else f"more than {limit} bytes"
        super().__init__(
            service,
            f"{route} answered HTTP {status} with a body of {size}, over MAX_RESPONSE_BYTES ({limit}); "
            "ask for less (a smaller page) or raise MAX_RESPONSE_BYTES",
            correlation_id=correlation_id,
        )


class UpstreamTimeoutError(UpstreamError):
    """The upstream did not answer in time, on every attempt."""


class UpstreamConnectionError(UpstreamError):
    """The upstream could not be reached (refused, reset, TLS failure), on every attempt."""


@dataclass(frozen=True)
class UpstreamResponse:
    status: int
    headers: Mapping[str, str]
    body: bytes
    correlation_id: str
    upstream_request_id: str | None = None

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None

    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    def retry_after(self, now: float | None = None) -> float | None:
        return retry_delay_from_headers(self.headers, now=now)

    def raise_for_status(self, service: str, expected: tuple[int, ...] = (200,)) -> UpstreamResponse:
        if self.status not in expected:
            raise UpstreamStatusError(service, self)
        return self


def retry_delay_from_headers(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """Seconds the upstream asked us to wait, from ``Retry-After`` or ``X-RateLimit-Reset``."""
    now = time.time() if now is None else now
    value = _header(headers, "retry-after")
    if value:
        value = value.strip()
        if value.isdigit():
            return float(value)
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            when = None
        if when is not None:
            if when.tzinfo is None:
                when = when.replace(tzinfo=UTC)
            return max(0.0, when.timestamp() - now)
    reset = _header(headers, "x-ratelimit-reset")
    if reset:
        try:
            number = float(reset.strip())
        except ValueError:
            return None
        # Emarsys sends an epoch timestamp; some APIs send seconds-until-reset. Tell them apart by size.
        return max(0.0, number - now) if number > 1_000_000_000 else max(0.0, number)
    return None


def _header(headers: Mapping[str, str], name: str) -> str | None:
    for key, value in headers.items():
        if key.lower() == name:
            return value
    return None


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 4
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    # The longest wait an upstream may ask for before we give up instead of sleeping.
    max_server_delay: float = 60.0
    rng: random.Random = field(default_factory=random.Random, compare=False)

    def backoff(self, attempt: int) -> float:
        """Full-jitter exponential backoff for the given 1-based attempt that just failed."""
        ceiling = min(self.backoff_max, self.backoff_base * (2 ** (attempt - 1)))
        return self.rng.uniform(0, ceiling)

    def delay(self, attempt: int, server_delay: float | None) -> float:
        if server_delay is not None:
            return min(server_delay, self.max_server_delay)
        return self.backoff(attempt)


def build_ssl_context(extra_ca_bundle: Path | None) -> ssl.SSLContext:
    """System trust store, plus one extra CA when configured (the local sandbox). Never less."""
    context = ssl.create_default_context()
    if extra_ca_bundle is not None:
        context.load_verify_locations(cafile=str(extra_ca_bundle))
    return context


class HttpClient:
    """Sends requests with the shared retry policy. One instance (and one session) per process."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        policy: RetryPolicy,
        *,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        sleep: Any = asyncio.sleep,
    ) -> None:
        self.session = session
        self.policy = policy
        self.max_response_bytes = max_response_bytes
        self._sleep = sleep

    async def send(
        self,
        method: str,
        url: str,
        *,
        service: str,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        json_body: Any = None,
        data: Any = None,
        idempotent: bool = True,
        correlation_id: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109  # per-call override of the session's timeout
        route: str | None = None,
    ) -> UpstreamResponse:
        """Send with retries. Retryable statuses are retried, then the last response is returned as is.

        A body over ``max_response_bytes`` raises :class:`UpstreamResponseTooLargeError` (never
        retried: the same request gets the same answer). ``route`` names the call in that error;
        by default the method and the URL's path, never its query, which may carry personal data.
        """
        correlation_id = correlation_id or str(uuid.uuid4())
        parts = urlsplit(url)
        route = route or f"{method} {parts.path}"
        # One client span per call, its retries as events (shared/telemetry.py): the route
        # template names it, never the URL, whose path or query may hold a key or an address.
        with telemetry.upstream_call(
            service,
            route.removeprefix(f"{method} "),
            method=method,
            server=parts.hostname,
            oun=_header(headers or {}, "oun"),
        ) as call:
            return await self._send(
                method,
                url,
                call,
                service=service,
                headers=headers,
                params=params,
                json_body=json_body,
                data=data,
                idempotent=idempotent,
                correlation_id=correlation_id,
                timeout=timeout,
                route=route,
            )

    async def _send(
        self,
        method: str,
        url: str,
        call: telemetry.UpstreamCall,
        *,
        service: str,
        headers: Mapping[str, str] | None,
        params: Mapping[str, str] | None,
        json_body: Any,
        data: Any,
        idempotent: bool,
        correlation_id: str,
        timeout: float | None,  # noqa: ASYNC109  # per-call override of the session's timeout
        route: str,
    ) -> UpstreamResponse:
        import aiohttp  # loaded already, with the session

        retry_statuses = RETRYABLE_STATUSES if idempotent else RETRYABLE_STATUSES_NON_IDEMPOTENT
        request_headers = {"x-ms-client-request-id": correlation_id, **(headers or {})}
        extra: dict[str, Any] = {}
        if timeout is not None:
            extra["timeout"] = aiohttp.ClientTimeout(total=timeout)
        attempt = 0
        # Whether an earlier attempt may have been processed: the error raised at the end says so
        # for all attempts, not only the last (a timeout, then a refused connection, may still mail).
        reached = False
        while True:
            attempt += 1
            try:
                async with self.session.request(
                    method,
                    url,
                    headers=request_headers,
                    params=params,
                    json=json_body,
                    data=data,
                    **extra,
                ) as resp:
                    call.answered(resp.status)
                    body = await self._read_capped(resp, service, route, correlation_id)
                    response = UpstreamResponse(
                        status=resp.status,
                        headers=dict(resp.headers),
                        body=body,
                        correlation_id=correlation_id,
                        upstream_request_id=_first_header(resp.headers, _CORRELATION_HEADERS),
                    )
            except TimeoutError as exc:
                # aiohttp names a timeout while connecting apart; any other may hide a request the
                # upstream received.
                reached = reached or not isinstance(exc, aiohttp.ConnectionTimeoutError)
                if not idempotent or attempt >= self.policy.max_attempts:
                    raise UpstreamTimeoutError(
                        service,
                        f"no answer in time after {attempt} attempt(s)",
                        correlation_id=correlation_id,
                        may_have_arrived=reached,
                    ) from exc
                await self._wait(call, service, attempt, None, "timeout")
                continue
            except aiohttp.ClientConnectorError as exc:
                # The connection was never made, so even a non-idempotent request can be sent again.
                if attempt >= self.policy.max_attempts:
                    raise UpstreamConnectionError(
                        service,
                        f"cannot connect ({type(exc).__name__})",
                        correlation_id=correlation_id,
                        may_have_arrived=reached,
                    ) from exc
                await self._wait(call, service, attempt, None, "connect error")
                continue
            except aiohttp.ClientError as exc:
                reached = True
                if not idempotent or attempt >= self.policy.max_attempts:
                    raise UpstreamConnectionError(
                        service, f"connection failed ({type(exc).__name__})", correlation_id=correlation_id
                    ) from exc
                await self._wait(call, service, attempt, None, type(exc).__name__)
                continue

            if response.status in retry_statuses and attempt < self.policy.max_attempts:
                # 429 and 503 say the request was not processed; a 5xx else may hide one that was.
                reached = reached or response.status not in RETRYABLE_STATUSES_NON_IDEMPOTENT
                server_delay = response.retry_after()
                if server_delay is not None and server_delay > self.policy.max_server_delay:
                    return response
                await self._wait(call, service, attempt, server_delay, f"HTTP {response.status}")
                continue
            return response

    async def _read_capped(
        self, resp: aiohttp.ClientResponse, service: str, route: str, correlation_id: str
    ) -> bytes:
        """The body, read in chunks and given up on as soon as it is over the cap.

        Leaving the response unread makes aiohttp close the connection instead of draining it.
        """
        limit = self.max_response_bytes
        declared = resp.content_length
        if declared is not None and declared > limit:
            raise UpstreamResponseTooLargeError(
                service,
                route,
                limit=limit,
                status=resp.status,
                declared=declared,
                correlation_id=correlation_id,
            )
        chunks: list[bytes] = []
        size = 0
        async for chunk in resp.content.iter_chunked(_READ_CHUNK):
            size += len(chunk)
            if size > limit:
                raise UpstreamResponseTooLargeError(
                    service,
                    route,
                    limit=limit,
                    status=resp.status,
                    declared=None,
                    correlation_id=correlation_id,
                )
            chunks.append(chunk)
        return b"".join(chunks)

    async def _wait(
        self,
        call: telemetry.UpstreamCall,
        service: str,
        attempt: int,
        server_delay: float | None,
        reason: str,
    ) -> None:
        delay = self.policy.delay(attempt, server_delay)
        call.retry(attempt, delay, reason)
        logger.warning(
            "retrying %s call after %s (attempt %d of %d, waiting %.2fs)",
            service,
            reason,
            attempt,
            self.policy.max_attempts,
            delay,
        )
        await self._sleep(delay)


def _first_header(headers: Mapping[str, str], names: tuple[str, ...]) -> str | None:
    for name in names:
        value = _header(headers, name)
        if value:
            return value
    return None


def new_session(
    *, total_timeout: float, connect_timeout: float, ssl_context: ssl.SSLContext, limit: int = 100
) -> aiohttp.ClientSession:
    import aiohttp

    connector = aiohttp.TCPConnector(ssl=ssl_context, limit=limit, limit_per_host=50, ttl_dns_cache=300)
    timeout = aiohttp.ClientTimeout(total=total_timeout, sock_connect=connect_timeout)
    return aiohttp.ClientSession(
        connector=connector,
        timeout=timeout,
        raise_for_status=False,
        headers={"User-Agent": "d365-commerce-connector/0.1"},
    )
