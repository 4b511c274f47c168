"""Concurrent sends of one process go to the provider as one batch call.

The host runs up to ``batchSize`` queue messages of a process at once. Each invocation hands its
one message to :class:`BatchingSender`; messages that arrive within a short window (the same
``COALESCE_WINDOW_MS`` as the look-ups) leave together through the provider's ``send_many``
(Emarsys' batch trigger, up to 1,000 contacts and 1 MB per call), and each invocation gets its own
result back. A lone message uses ``send``, so its errors are the provider's own.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from shared import telemetry
from shared.email.base import (
    EmailMessage,
    EmailProvider,
    PartialSendError,
    ProviderConfigurationError,
    ProviderRejectedError,
    ProviderTransientError,
    ProviderUncertainError,
    SendResult,
)

if TYPE_CHECKING:
    from opentelemetry.trace import Link

# A message waiting for the batch, its invocation's future, and its invocation's span (the batch's
# span links to every one of them).
_Waiting = tuple[EmailMessage, "asyncio.Future[SendResult]", "Link | None"]


class BatchingSender:
    def __init__(self, provider: EmailProvider, *, window_seconds: float, max_batch: int = 1000) -> None:
        self._provider = provider
        self._window = window_seconds
        self._max_batch = max_batch
        self._waiting: list[_Waiting] = []
        self._timer: asyncio.TimerHandle | None = None
        self._flushes: set[asyncio.Task[None]] = set()
        self.calls = 0

    @property
    def _name(self) -> str:
        return str(getattr(self._provider, "name", "unknown"))

    async def send(self, message: EmailMessage) -> SendResult:
        with telemetry.span("email send", attributes={"connector.provider": self._name}):
            return await self._send(message)

    async def _send(self, message: EmailMessage) -> SendResult:
        if self._window <= 0:
            self.calls += 1
            with self._provider_call(1, []):
                return await self._provider.send(message)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[SendResult] = loop.create_future()
        self._waiting.append((message, future, telemetry.current_link()))
        if len(self._waiting) >= self._max_batch:
            self._flush_now()
        elif self._timer is None:
            self._timer = loop.call_later(self._window, self._flush_now)
        return await future

    def _flush_now(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch, self._waiting = self._waiting, []
        if batch:
            task = asyncio.get_running_loop().create_task(self._deliver(batch))
            self._flushes.add(task)
            task.add_done_callback(self._flushes.discard)

    @contextlib.contextmanager
    def _provider_call(self, size: int, links: Sequence[Link]) -> Iterator[None]:
        """One call of the provider: a span linked to the invocations whose messages it carries
        (it is a child of the first one's), its duration and its batch size as metrics."""
        name = self._name
        started = time.perf_counter()
        status = "ok"
        try:
            with telemetry.span(
                f"email provider {name}",
                attributes={"connector.provider": name, "connector.batch_size": size},
                links=links,
            ):
                yield
        except BaseException as exc:
            status = _status_of(exc)
            raise
        finally:
            telemetry.PROVIDER_DURATION.record(
                (time.perf_counter() - started) * 1000, {"provider": name, "status": status}
            )
            telemetry.PROVIDER_BATCH_SIZE.record(size, {"provider": name})

    async def _deliver(self, batch: Sequence[_Waiting]) -> None:
        self.calls += 1
        links = [link for _, _, link in batch if link is not None]
        try:
            with self._provider_call(len(batch), links):
                if len(batch) == 1:
                    results = [await self._provider.send(batch[0][0])]
                else:
                    results = await self._provider.send_many([message for message, _, _ in batch])
        except PartialSendError as partial:
            # Some went out, some did not: each invocation gets its own result or error.
            for (_, future, _), outcome in zip(batch, partial.outcomes, strict=True):
                if future.done():
                    continue
                if isinstance(outcome, SendResult):
                    future.set_result(outcome)
                else:
                    future.set_exception(outcome)
            return
        except BaseException as exc:
            for _, future, _ in batch:
                if not future.done():
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for (_, future, _), result in zip(batch, results, strict=True):
            if future.done():
                continue
            if result.status == "failed":
                # What send() raises for a refused message; here one of a batch was refused.
                future.set_exception(ProviderRejectedError(result.reason or "refused by the provider"))
            else:
                future.set_result(result)

    async def close(self) -> None:
        self._flush_now()
        for task in list(self._flushes):
            with contextlib.suppress(Exception):
                await task


def _status_of(exc: BaseException) -> str:
    """The ``status`` dimension of a provider call that raised."""
    if isinstance(exc, PartialSendError):
        return "partial"
    if isinstance(exc, ProviderRejectedError):
        return "rejected"
    if isinstance(exc, ProviderConfigurationError):
        return "misconfigured"
    if isinstance(exc, ProviderUncertainError):
        return "uncertain"
    if isinstance(exc, ProviderTransientError):
        return "transient"
    return telemetry.failure_status(exc)
