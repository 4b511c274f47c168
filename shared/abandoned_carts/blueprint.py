"""Binding glue for the abandoned-cart functions: translate binding objects, call one service.

The host imports this module to index the functions; the detection and notify pipelines (their
models, the ledger, the providers) load with the first invocation that runs them, so an instance
woken by a till's CreateCustomer call does not wait for them.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any

import azure.functions as func

from shared import telemetry
from shared.runtime import Runtime, get_runtime
from shared.timeutil import utcnow

if TYPE_CHECKING:
    from shared.abandoned_carts.detect import DetectionConfig
    from shared.abandoned_carts.notify import NotifyService
    from shared.settings import Settings

bp = func.Blueprint()  # type: ignore[no-untyped-call]

QUEUE_CONNECTION = "AzureWebJobsStorage"
logger = logging.getLogger(__name__)


def detection_config(settings: Settings) -> DetectionConfig:
    from datetime import timedelta

    from shared.abandoned_carts.detect import DetectionConfig

    return DetectionConfig(
        operating_unit_numbers=list(settings.operating_unit_numbers),
        lookback=timedelta(minutes=settings.lookback_minutes),
        abandoned_after=timedelta(minutes=settings.abandoned_after_minutes),
        max_carts_per_run=settings.max_carts_per_run,
        page_size=settings.cart_page_size,
        first_step_delay=timedelta(minutes=settings.reminder_steps[0]),
    )


@bp.function_name("detect_abandoned_carts")
@bp.timer_trigger(arg_name="timer", schedule="%DETECT_SCHEDULE%", run_on_startup=False, use_monitor=True)
@bp.queue_output(arg_name="messages", queue_name="%DETECTION_QUEUE_NAME%", connection=QUEUE_CONNECTION)
async def detect_abandoned_carts(timer: func.TimerRequest, messages: func.Out[list[str]]) -> None:
    from shared.abandoned_carts.detect import DetectionFailedError, Detector

    # The run's span: every message it queues carries its trace context (shared/telemetry.py).
    with telemetry.invocation_span(
        "detect_abandoned_carts", trigger="timer", attributes={"connector.past_due": bool(timer.past_due)}
    ):
        runtime = await get_runtime()
        detector = Detector(runtime.retail, runtime.store, detection_config(runtime.settings))
        try:
            result = await detector.run(utcnow())
        except DetectionFailedError as failed:
            # The invocation fails, and the host writes no output binding of a failed invocation:
            # the healthy channels' messages go on the queue directly (shared/queues.py).
            await _queue_directly(runtime.settings.detection_queue_name, failed.result.messages)
            raise
        if result.messages:
            messages.set(result.messages)


async def _queue_directly(queue: str, messages: list[str]) -> None:
    from shared import queues
    from shared.abandoned_carts.detect import REQUEUE_AFTER
    from shared.privacy.redaction import redact

    try:
        await queues.send_messages(queue, messages)
    except Exception as exc:
        # Not lost: the entries are marked queued, and a later run's sweep queues them again
        # after REQUEUE_AFTER.
        logger.error(
            "the %d message(s) of the failed run could not be queued directly (%s: %s); a later run "
            "queues them again after %d minutes",
            len(messages),
            type(exc).__name__,
            redact(str(exc)),
            int(REQUEUE_AFTER.total_seconds() // 60),
        )


# ----- notification

NOTIFY_SERVICE_KEY = "notify_service"


def notify_service(runtime: Runtime) -> NotifyService:
    """The process's notify service: one enricher (coalescing windows, caches) and one provider."""
    existing = runtime.extras.get(NOTIFY_SERVICE_KEY)
    if existing is None:
        from shared.abandoned_carts.enrich import Enricher
        from shared.abandoned_carts.notify import NotifyConfig, NotifyService
        from shared.email.factory import provider_for
        from shared.recovery.experiment import Experiment, HoldoutConfig

        settings = runtime.settings
        provider = provider_for(runtime)
        existing = NotifyService(
            retail=runtime.retail,
            store=runtime.store,
            provider=provider,
            enricher=Enricher(
                runtime.retail,
                window_seconds=settings.coalesce_window_ms / 1000,
                product_ttl_seconds=settings.product_cache_ttl_seconds,
                channel_ttl_seconds=settings.channel_cache_ttl_seconds,
            ),
            config=NotifyConfig.from_settings(settings),
            secrets=runtime.secrets,
            # A dry run (the preview provider) mails nobody, so it holds nobody out either.
            experiment=Experiment(
                runtime.store,
                HoldoutConfig.from_settings(settings),
                runtime.secrets,
                dry_run=not getattr(provider, "sends_email", True),
            ),
        )
        runtime.extras[NOTIFY_SERVICE_KEY] = existing
    service: NotifyService = existing
    return service


@bp.function_name("notify_abandoned_cart")
@bp.queue_trigger(arg_name="msg", queue_name="%DETECTION_QUEUE_NAME%", connection=QUEUE_CONNECTION)
@bp.queue_output(arg_name="poison", queue_name="%DETECTION_QUEUE_NAME%-poison", connection=QUEUE_CONNECTION)
async def notify_abandoned_cart(msg: func.QueueMessage, poison: func.Out[str]) -> None:
    from shared import queues
    from shared.abandoned_carts import observe
    from shared.abandoned_carts.notify import MalformedMessageError, decode_message

    # Counted under the queue the message lands in, as the host names it when it moves one.
    poison_queue = f"{queue_name()}-poison"
    dequeue_count = int(msg.dequeue_count or 1)
    try:
        message = decode_message(msg.get_body())
    except MalformedMessageError as exc:
        with telemetry.invocation_span(
            "notify_abandoned_cart", trigger="pubsub", attributes=_queue_attributes(msg)
        ):
            # Retrying cannot help: straight to the poison queue, as the host would after maxDequeueCount.
            logger.error(
                "queue message %s (dequeue count %s) moved to the poison queue: %s",
                msg.id,
                msg.dequeue_count,
                exc,
                extra=observe.poisoned_record(poison_queue, dequeue_count, "malformed"),
            )
            poison.set(msg.get_body().decode("utf-8", errors="replace"))
        return
    # The detection run's trace goes on here: the message carries its context (version 2).
    with telemetry.invocation_span(
        "notify_abandoned_cart",
        trigger="pubsub",
        parent=telemetry.context_from(message.traceparent),
        attributes={
            **_queue_attributes(msg),
            "connector.oun": message.oun,
            "connector.cart_id": message.cart_id,
            "connector.cart_version": message.cart_version,
            "connector.step": message.step,
            "connector.message_version": message.v,
        },
    ):
        runtime = await get_runtime()
        try:
            await notify_service(runtime).handle(message, utcnow())
        except Exception:
            if dequeue_count >= queues.max_dequeue_count():
                # The host moves the message to the poison queue after this last attempt.
                logger.error(
                    "queue message %s failed its last attempt (dequeue count %d): the host moves it to "
                    "the poison queue",
                    msg.id,
                    dequeue_count,
                    extra=observe.poisoned_record(poison_queue, dequeue_count, "retries_exhausted"),
                )
            raise


def _queue_attributes(msg: func.QueueMessage) -> dict[str, Any]:
    return {
        "messaging.system": "azure_storage_queue",
        "messaging.destination.name": queue_name(),
        "messaging.message.id": msg.id,
        "messaging.message.delivery_count": msg.dequeue_count,
    }


def queue_name() -> str:
    """The detection queue's name, read as the host does (the setting, else the code's default)."""
    from shared.settings import Settings

    name = os.environ.get("DETECTION_QUEUE_NAME", "").strip()
    return name or str(Settings.model_fields["detection_queue_name"].default)
