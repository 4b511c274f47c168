"""Hostile queue messages: any bytes, any JSON, a message with one part replaced, removed
or added, and deep nesting, into the registered ``notify_abandoned_cart`` as the host delivers it.

The function never raises on them (a raise would have the host retry a message that can only fail
again); a message it cannot read goes to the poison queue at once with a logged reason; and none of
them calls Retail Server, Entra ID or the email provider.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from sandbox.server import Sandbox
from shared.abandoned_carts.notify import MalformedMessageError, decode_message
from shared.runtime import Runtime
from tests.conftest import _Capture
from tests.hostile import HOSTILE, TRIED, bodies
from tests.notify.conftest import RecordingProvider, run_notify

MESSAGE = {"v": 1, "cartId": "c-0001", "cartVersion": 3, "oun": "128", "step": 1}


def _upstream(sandbox: Sandbox) -> int:
    return sum(sandbox.stats.requests.values()) + sum(sandbox.stats.token_requests.values())


@HOSTILE
@given(body=bodies(MESSAGE), dequeue_count=st.integers(min_value=1, max_value=5))
async def test_notify_takes_any_message_without_raising(
    registered_functions: dict[str, Any],
    runtime: Runtime,
    sandbox: Sandbox,
    recorder: RecordingProvider,
    log_privacy_guard: _Capture,
    body: bytes,
    dequeue_count: int,
) -> None:
    TRIED["notify_abandoned_cart"] += 1
    upstream, lines = _upstream(sandbox), len(log_privacy_guard.lines)
    try:
        decode_message(body)
        readable = True
    except MalformedMessageError:
        readable = False
    event("readable" if readable else "malformed")

    poison = await run_notify(registered_functions, body, dequeue_count=dequeue_count)

    logged = log_privacy_guard.lines[lines:]
    if readable:
        # No such cart on the ledger: the message is ignored, as a redelivered one would be.
        assert poison.get() is None
        assert any("ignored" in line and "no_ledger_entry" in line for line in logged), logged
    else:
        assert poison.get() == body.decode("utf-8", errors="replace")
        reasons = [line for line in logged if "moved to the poison queue: the message" in line]
        assert len(reasons) == 1, logged
    assert _upstream(sandbox) == upstream and recorder.sent == []


def test_a_foreign_key_can_hold_anything_and_is_still_not_named() -> None:
    key = 'robin "hostile" o\'hara <robin@example.org>'
    body = json.dumps({**MESSAGE, key: {"nested": [1]}}).encode()
    with pytest.raises(MalformedMessageError) as caught:
        decode_message(body)
    assert "robin" not in str(caught.value) and "1 unknown field (1 object)" in str(caught.value)
