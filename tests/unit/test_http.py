"""The retry policy and typed errors, against a real aiohttp server on loopback."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from shared.http import (
    HttpClient,
    RetryPolicy,
    UpstreamConnectionError,
    UpstreamResponseTooLargeError,
    UpstreamStatusError,
    UpstreamTimeoutError,
    retry_delay_from_headers,
)


class Script:
    """Answers the n-th request with the n-th handler, then repeats the last one."""

    def __init__(self, *handlers: Callable[[web.Request], Any]) -> None:
        self.handlers = list(handlers)
        self.calls = 0

    async def __call__(self, request: web.Request) -> web.StreamResponse:
        handler = self.handlers[min(self.calls, len(self.handlers) - 1)]
        self.calls += 1
        result = handler(request)
        if asyncio.iscoroutine(result):
            result = await result
        assert isinstance(result, web.StreamResponse)
        return result


@pytest.fixture
async def server() -> AsyncIterator[tuple[str, Callable[[Script], None]]]:
    script_holder: dict[str, Script] = {}

    async def handle(request: web.Request) -> web.StreamResponse:
        return await script_holder["script"](request)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    def use(script: Script) -> None:
        script_holder["script"] = script

    yield f"http://127.0.0.1:{port}", use
    await runner.cleanup()


class Sleeps:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


@pytest.fixture
async def client() -> AsyncIterator[tuple[HttpClient, Sleeps]]:
    sleeps = Sleeps()
    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=0.5))
    yield (
        HttpClient(
            session, RetryPolicy(max_attempts=3, backoff_base=0.1, rng=random.Random(1)), sleep=sleeps
        ),
        sleeps,
    )
    await session.close()


def ok(_: web.Request) -> web.Response:
    return web.json_response({"ok": True})


async def test_retries_429_honouring_retry_after(server: Any, client: Any) -> None:
    url, use = server
    http, sleeps = client
    script = Script(lambda _: web.Response(status=429, headers={"Retry-After": "7"}), ok)
    use(script)
    response = await http.send("GET", url + "/x", service="test")
    assert response.status == 200 and response.json() == {"ok": True}
    assert script.calls == 2
    assert sleeps.delays == [7.0]


async def test_503_exhausts_attempts_then_typed_error(server: Any, client: Any) -> None:
    url, use = server
    http, sleeps = client
    script = Script(lambda _: web.Response(status=503, headers={"request-id": "up-1"}))
    use(script)
    response = await http.send("GET", url + "/x", service="test", correlation_id="corr-1")
    assert script.calls == 3
    assert len(sleeps.delays) == 2
    assert all(0 <= d <= 0.2 for d in sleeps.delays), (
        "full-jitter backoff stays under the exponential ceiling"
    )
    with pytest.raises(UpstreamStatusError) as caught:
        response.raise_for_status("test")
    assert caught.value.status == 503
    assert caught.value.correlation_id == "corr-1"
    assert caught.value.upstream_request_id == "up-1"
    assert "corr-1" in str(caught.value)


async def test_correlation_id_header_is_sent(server: Any, client: Any) -> None:
    url, use = server
    http, _ = client
    seen: list[str] = []

    def record(request: web.Request) -> web.Response:
        seen.append(request.headers["x-ms-client-request-id"])
        return web.Response(status=200)

    use(Script(record))
    response = await http.send("GET", url + "/x", service="test")
    assert seen == [response.correlation_id]


async def test_non_idempotent_requests_are_not_retried_on_500(server: Any, client: Any) -> None:
    url, use = server
    http, _ = client
    script = Script(lambda _: web.Response(status=500), ok)
    use(script)
    response = await http.send("POST", url + "/create", service="test", idempotent=False)
    assert response.status == 500
    assert script.calls == 1


async def test_timeouts_are_retried_then_raise(server: Any, client: Any) -> None:
    url, use = server
    http, _ = client

    async def slow(_: web.Request) -> web.Response:
        await asyncio.sleep(0.3)
        return web.Response(status=200)

    script = Script(slow)
    use(script)
    with pytest.raises(UpstreamTimeoutError, match="after 3 attempt"):
        await http.send("GET", url + "/slow", service="test", timeout=0.05)
    assert script.calls == 3


async def test_timeout_of_non_idempotent_request_is_not_retried(server: Any, client: Any) -> None:
    url, use = server
    http, _ = client

    async def slow(_: web.Request) -> web.Response:
        await asyncio.sleep(0.3)
        return web.Response(status=200)

    script = Script(slow)
    use(script)
    with pytest.raises(UpstreamTimeoutError) as caught:
        await http.send("POST", url + "/slow", service="test", timeout=0.05, idempotent=False)
    assert script.calls == 1
    # The request was written: the upstream may have acted on it.
    assert caught.value.may_have_arrived


async def test_connection_refused_becomes_typed_error(client: Any) -> None:
    http, sleeps = client
    with pytest.raises(UpstreamConnectionError, match="cannot connect") as caught:
        await http.send("GET", "http://127.0.0.1:9/", service="test")
    assert len(sleeps.delays) == 2
    assert not caught.value.may_have_arrived  # no connection, so certainly not processed


async def test_an_attempt_that_may_have_arrived_is_remembered_when_a_later_one_cannot_connect(
    client: Any,
) -> None:
    """A timeout (the request was written), then the upstream is gone: the final "cannot connect"
    still says the request may have been processed, by the first attempt."""
    http, _ = client
    app = web.Application()
    runner = web.AppRunner(app, handler_cancellation=True)
    stopped = asyncio.Event()

    async def slow_then_gone(_: web.Request) -> web.Response:
        stopped.set()
        await asyncio.sleep(1)
        return web.Response(status=200)

    app.router.add_post("/x", slow_then_gone)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop_after_first_request() -> None:
        await stopped.wait()
        await site.stop()

    stopper = asyncio.create_task(stop_after_first_request())
    try:
        with pytest.raises(UpstreamConnectionError, match="cannot connect") as caught:
            await http.send("POST", f"http://127.0.0.1:{port}/x", service="test", timeout=0.1)
        assert caught.value.may_have_arrived
    finally:
        await stopper
        await runner.cleanup()


async def test_too_long_retry_after_is_returned_not_slept(server: Any, client: Any) -> None:
    url, use = server
    http, sleeps = client
    use(Script(lambda _: web.Response(status=429, headers={"Retry-After": "3600"})))
    response = await http.send("GET", url + "/x", service="test")
    assert response.status == 429
    assert sleeps.delays == []
    assert response.retry_after() == 3600


def test_retry_after_forms() -> None:
    now = 1_800_000_000.0
    assert retry_delay_from_headers({"Retry-After": "12"}, now=now) == 12
    assert (
        retry_delay_from_headers({"retry-after": "Fri, 15 Jan 2027 08:00:10 GMT"}, now=1_800_000_000.0) >= 0
    )
    assert retry_delay_from_headers({"X-RateLimit-Reset": str(int(now) + 30)}, now=now) == 30
    assert retry_delay_from_headers({"X-RateLimit-Reset": "5"}, now=now) == 5
    assert retry_delay_from_headers({}, now=now) is None


CAP = 64 * 1024


@pytest.fixture
async def capped() -> AsyncIterator[HttpClient]:
    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))
    yield HttpClient(session, RetryPolicy(max_attempts=3, backoff_base=0), max_response_bytes=CAP)
    await session.close()


async def test_a_declared_length_over_the_cap_is_refused_before_reading(
    server: Any, capped: HttpClient
) -> None:
    """The server declares 10 MB and holds the body back until the client has answered: the error
    can only come from the Content-Length header, with nothing of the body read."""
    url, use = server
    answered = asyncio.Event()

    async def declares_ten_megabytes(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.content_length = 10_000_000
        await response.prepare(request)
        await response.write(b"[")
        await asyncio.wait_for(answered.wait(), timeout=5)
        return response

    script = Script(declares_ten_megabytes)
    use(script)
    try:
        with pytest.raises(UpstreamResponseTooLargeError) as caught:
            await capped.send(
                "GET", url + "/Carts/Search?customer=someone@example.com", service="Retail Server"
            )
    finally:
        answered.set()
    assert script.calls == 1, "the same request gets the same answer: never retried"
    error = caught.value
    assert (error.declared, error.limit, error.status) == (10_000_000, CAP, None)
    message = str(error)
    assert "MAX_RESPONSE_BYTES" in message and "Retail Server" in message
    assert "GET /Carts/Search" in message and "10000000 bytes (Content-Length)" in message
    assert "someone" not in message, "the query (personal data) is left out"


async def test_a_streamed_body_is_given_up_at_the_cap(server: Any, capped: HttpClient) -> None:
    url, use = server
    written: list[int] = []

    async def endless(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        piece = b"x" * 65_536
        try:
            for _ in range(4096):  # 256 MiB, if anyone read it all
                await response.write(piece)
                written.append(len(piece))
        except ConnectionError:
            pass
        return response

    use(Script(endless))
    with pytest.raises(UpstreamResponseTooLargeError, match="body of more than 65536 bytes") as caught:
        await capped.send("POST", url + "/Carts/Search", service="Retail Server", route="Carts/Search")
    assert caught.value.declared is None and caught.value.route == "Carts/Search"
    assert sum(written) < 64 * 1024 * 1024, "the connection was dropped, not drained"


@pytest.mark.parametrize("chunked", [False, True])
async def test_a_body_at_the_cap_is_read_whole(server: Any, capped: HttpClient, chunked: bool) -> None:
    url, use = server

    async def at_cap(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        if chunked:
            response.enable_chunked_encoding()
        else:
            response.content_length = CAP
        await response.prepare(request)
        await response.write(b"y" * CAP)
        await response.write_eof()
        return response

    use(Script(at_cap))
    response = await capped.send("GET", url + "/x", service="test")
    assert response.body == b"y" * CAP
