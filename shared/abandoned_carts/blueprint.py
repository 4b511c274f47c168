"""Binding glue for the abandoned-cart functions: translate binding objects, call one service."""

from __future__ import annotations

import azure.functions as func

from shared.abandoned_carts.detect import DetectionConfig, Detector
from shared.runtime import get_runtime
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
