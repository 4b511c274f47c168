"""Binding glue for the abandoned-cart functions: translate binding objects, call one service."""

from __future__ import annotations

import logging

import azure.functions as func

from shared.abandoned_carts.detect import DetectionConfig, Detector
from shared.abandoned_carts.enrich import Enricher
from shared.abandoned_carts.notify import MalformedMessageError, NotifyConfig, NotifyService, decode_message
from shared.email.factory import provider_for
from shared.recovery.experiment import Experiment, HoldoutConfig
from shared.runtime import Runtime, get_runtime
from shared.settings import Settings
from shared.timeutil import utcnow

bp = func.Blueprint()  # type: ignore[no-untyped-call]

QUEUE_CONNECTION = "AzureWebJobsStorage"


def detection_config(settings: Settings) -> DetectionConfig:
    from datetime import timedelta

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
    runtime = await get_runtime()
    detector = Detector(runtime.retail, runtime.store, detection_config(runtime.settings))
    result = await detector.run(utcnow())
    if result.messages:
        messages.set(result.messages)


# ----- notification (issue 3)

NOTIFY_SERVICE_KEY = "notify_service"
logger = logging.getLogger(__name__)


def notify_service(runtime: Runtime) -> NotifyService:
    """The process's notify service: one enricher (coalescing windows, caches) and one provider."""
    existing = runtime.extras.get(NOTIFY_SERVICE_KEY)
    if existing is None:
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
    try:
        message = decode_message(msg.get_body())
    except MalformedMessageError as exc:
        # Retrying cannot help: straight to the poison queue, as the host would after maxDequeueCount.
        logger.error(
            "queue message %s (dequeue count %s) moved to the poison queue: %s",
            msg.id,
            msg.dequeue_count,
            exc,
        )
        poison.set(msg.get_body().decode("utf-8", errors="replace"))
        return
    runtime = await get_runtime()
    await notify_service(runtime).handle(message, utcnow())
