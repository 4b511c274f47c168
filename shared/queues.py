"""Putting messages on a Storage queue without the output binding, as the binding would have.

A detection run in which a channel failed must end as a failed invocation, and the host writes no
output binding of a failed invocation: the healthy channels' messages would be lost with it. So
they go on the queue here, through ``azure-storage-queue``, with the connection the bindings use
(``AzureWebJobsStorage``: a connection string locally, the identity-based ``__queueServiceUri``
and ``__clientId`` in Azure) and the message encoding ``host.json`` declares (base64), so the queue
trigger reads them as it reads the binding's.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from shared import telemetry

HOST_JSON = Path(__file__).resolve().parent.parent / "host.json"
CONNECTION = "AzureWebJobsStorage"
# The host's defaults when host.json does not set them.
_DEFAULT_ENCODING = "base64"
_DEFAULT_MAX_DEQUEUE_COUNT = 5
# The whole write, every message of it: the run has already spent its time on Retail Server.
DEADLINE_SECONDS = 30.0


class QueueNotConfiguredError(RuntimeError):
    """No ``AzureWebJobsStorage`` connection to write with (the demo, a unit test)."""


@functools.cache
def host_queue_settings() -> dict[str, Any]:
    """``extensions.queues`` of host.json (empty when it cannot be read)."""
    try:
        host = json.loads(HOST_JSON.read_text(encoding="utf-8"))
        queues = host["extensions"]["queues"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    return dict(queues) if isinstance(queues, dict) else {}


def max_dequeue_count() -> int:
    """The attempts the host gives a message before it moves it to the poison queue."""
    value = host_queue_settings().get("maxDequeueCount", _DEFAULT_MAX_DEQUEUE_COUNT)
    return value if isinstance(value, int) and value > 0 else _DEFAULT_MAX_DEQUEUE_COUNT


async def send_messages(
    queue_name: str, messages: Sequence[str], *, environ: Mapping[str, str] | None = None
) -> None:
    """Put ``messages`` on ``queue_name``, within :data:`DEADLINE_SECONDS`; raises on any failure."""
    if not messages:
        return
    env = os.environ if environ is None else environ
    client, credential = _client(queue_name, env)
    try:
        with telemetry.upstream_call(
            "storage queue", "messages", method="POST", attributes={"connector.items": len(messages)}
        ):
            async with asyncio.timeout(DEADLINE_SECONDS):
                for message in messages:
                    await client.send_message(message)
    finally:
        await client.close()
        if credential is not None:
            await credential.close()


def _client(queue_name: str, env: Mapping[str, str]) -> tuple[Any, Any]:
    from azure.storage.queue import TextBase64EncodePolicy
    from azure.storage.queue.aio import QueueClient

    encoding = str(host_queue_settings().get("messageEncoding", _DEFAULT_ENCODING)).lower()
    # The SDK's default writes raw text, which a trigger expecting base64 cannot decode.
    policy = TextBase64EncodePolicy() if encoding == "base64" else None
    timeouts: dict[str, Any] = {"connection_timeout": 10, "read_timeout": 10, "retry_total": 2}
    connection_string = env.get(CONNECTION, "").strip()
    if connection_string:
        client = QueueClient.from_connection_string(
            connection_string, queue_name, message_encode_policy=policy, **timeouts
        )
        return client, None
    service_uri = env.get(f"{CONNECTION}__queueServiceUri", "").strip()
    if not service_uri:
        raise QueueNotConfiguredError(
            f"neither {CONNECTION} nor {CONNECTION}__queueServiceUri is set: cannot write to the queue"
        )
    from azure.identity.aio import DefaultAzureCredential, ManagedIdentityCredential

    client_id = env.get(f"{CONNECTION}__clientId", "").strip()
    credential: Any = (
        ManagedIdentityCredential(client_id=client_id) if client_id else DefaultAzureCredential()
    )
    client = QueueClient(
        service_uri, queue_name, credential=credential, message_encode_policy=policy, **timeouts
    )
    return client, credential
