"""Sharing one upstream call between concurrent callers without sharing their cancellation."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class SingleFlight(Generic[K, V]):
    """Concurrent callers asking for one key share one call; its result or error reaches them all.

    The call runs as its own task that every caller awaits shielded: a cancelled caller stops
    waiting, and the call goes on for the others.
    """

    def __init__(self) -> None:
        self._calls: dict[K, asyncio.Task[V]] = {}

    async def run(self, key: K, call: Callable[[], Awaitable[V]]) -> V:
        task = self._calls.get(key)
        if task is None:
            task = asyncio.create_task(_call(call))
            self._calls[key] = task
            task.add_done_callback(functools.partial(self._finished, key))
        return await asyncio.shield(task)

    def cancel_all(self) -> None:
        """Cancel the calls still running (on shutdown)."""
        for task in list(self._calls.values()):
            with contextlib.suppress(RuntimeError):  # its loop is already closed: nothing runs
                task.cancel()

    def _finished(self, key: K, task: asyncio.Task[V]) -> None:
        if self._calls.get(key) is task:
            del self._calls[key]
        retrieve_failure(task)


async def _call(call: Callable[[], Awaitable[V]]) -> V:
    return await call()


def retrieve_failure(task: asyncio.Task[object]) -> None:
    """Mark a task's failure retrieved, so one nobody waited for any more is not reported."""
    if not task.cancelled():
        task.exception()


def unwrap(settled: V | BaseException) -> V:
    """The value of one result of ``asyncio.gather(..., return_exceptions=True)``, or its error raised.

    Unwrapping the results in argument order raises the error of the first look-up that failed,
    as if they had run one after another, whichever finished first."""
    if isinstance(settled, BaseException):
        raise settled
    return settled
