"""Concurrent sends leave as one provider batch; each caller gets its own result or error."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from shared.email.base import (
    EmailMessage,
    PartialSendError,
    ProviderRejectedError,
    ProviderTransientError,
    ProviderUncertainError,
    Recipient,
    SendResult,
)
from shared.email.batching import BatchingSender


def message(index: int) -> EmailMessage:
    return EmailMessage(
        dedup_key=f"ac-cart{index}-1-1",
        recipient=Recipient(email=f"person{index}@example.com", customer_id=f"C{index}"),
        data={"index": index},
    )


class Provider:
    name = "test"

    def __init__(self, *, refuse: set[int] | None = None, error: Exception | None = None) -> None:
        self.calls: list[list[int]] = []
        self.refuse = refuse or set()
        self.error = error

    async def send(self, message: EmailMessage) -> SendResult:
        return (await self.send_many([message]))[0]

    async def send_many(self, messages: Sequence[EmailMessage]) -> list[SendResult]:
        self.calls.append([m.data["index"] for m in messages])
        if self.error is not None:
            raise self.error
        return [
            SendResult(status="failed", reason="invalid_contact")
            if m.data["index"] in self.refuse
            else SendResult(status="sent", provider_ids={"id": str(m.data["index"])})
            for m in messages
        ]

    async def close(self) -> None:
        return None


async def test_concurrent_sends_share_one_call_and_keep_their_results() -> None:
    provider = Provider()
    sender = BatchingSender(provider, window_seconds=0.01)
    results = await asyncio.gather(*(sender.send(message(i)) for i in range(5)))
    assert provider.calls == [[0, 1, 2, 3, 4]]
    assert [r.provider_ids["id"] for r in results] == ["0", "1", "2", "3", "4"]


async def test_a_full_batch_leaves_at_once() -> None:
    provider = Provider()
    sender = BatchingSender(provider, window_seconds=60, max_batch=3)
    results = await asyncio.gather(*(sender.send(message(i)) for i in range(3)))
    assert len(results) == 3 and provider.calls == [[0, 1, 2]]


async def test_one_refused_message_fails_alone() -> None:
    provider = Provider(refuse={1})
    sender = BatchingSender(provider, window_seconds=0.01)
    results = await asyncio.gather(*(sender.send(message(i)) for i in range(3)), return_exceptions=True)
    assert isinstance(results[1], ProviderRejectedError) and "invalid_contact" in str(results[1])
    assert all(isinstance(r, SendResult) and r.status == "sent" for r in (results[0], results[2]))


async def test_a_failed_call_fails_every_caller_of_the_batch() -> None:
    provider = Provider(error=ProviderTransientError("rate limited"))
    sender = BatchingSender(provider, window_seconds=0.01)
    results = await asyncio.gather(*(sender.send(message(i)) for i in range(2)), return_exceptions=True)
    assert all(isinstance(r, ProviderTransientError) for r in results)


async def test_no_window_sends_directly() -> None:
    provider = Provider()
    sender = BatchingSender(provider, window_seconds=0)
    await asyncio.gather(*(sender.send(message(i)) for i in range(2)))
    assert provider.calls == [[0], [1]]


async def test_a_partly_sent_batch_gives_each_caller_its_own_outcome() -> None:
    """What went out is reported sent, so notify never records it failed and sends it again."""
    sent = SendResult(status="sent", provider_ids={"id": "0"})
    lost = ProviderUncertainError("no answer in time", reason="timeout")
    untried = ProviderTransientError("not sent")
    provider = Provider(error=PartialSendError([sent, lost, untried]))
    sender = BatchingSender(provider, window_seconds=0.01)
    results = await asyncio.gather(*(sender.send(message(i)) for i in range(3)), return_exceptions=True)
    assert results == [sent, lost, untried]
