"""Binding glue of the recovery analytics: the ``track_conversions`` timer and the report.

- ``track_conversions`` runs on ``%TRACK_SCHEDULE%`` (hourly by default), see ``tracking.py``.
- ``GET /api/reports/recovery?from=&to=&oun=`` runs at auth level FUNCTION, like the other admin
  endpoints: it reads only counts, amounts and ids, never a person's data. ``from`` and ``to`` are
  dates (``2026-11-01``; ``to`` includes its whole day) or ISO 8601 times with an offset; by default
  the last 30 days. A bad parameter answers 400 problem+json naming it.
"""

from __future__ import annotations

import json
import logging
import re
import time
from datetime import UTC, date, datetime, timedelta

import azure.functions as func

from shared import telemetry
from shared.http_input import (
    CORRELATION_HEADER,
    RequestRejectedError,
    correlation_id_for,
    reject,
    rejected_response,
    unexpected_response,
)
from shared.problems import FieldError
from shared.runtime import get_runtime
from shared.timeutil import utcnow

logger = logging.getLogger(__name__)

bp = func.Blueprint()  # type: ignore[no-untyped-call]

TRACKING_EVENT = "conversion_tracking"
DEFAULT_RANGE = timedelta(days=30)
MAX_RANGE = timedelta(days=366)
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|[+-]\d{2}:\d{2})$")


@bp.function_name("track_conversions")
@bp.timer_trigger(arg_name="timer", schedule="%TRACK_SCHEDULE%", run_on_startup=False, use_monitor=True)
async def track_conversions(timer: func.TimerRequest) -> None:
    # Loaded with the first run: the tracker brings the Retail Server client and the ledger, which
    # a till's CreateCustomer call never needs.
    from shared.recovery.tracking import ConversionTracker, TrackingConfig

    with telemetry.invocation_span(
        "track_conversions", trigger="timer", attributes={"connector.past_due": bool(timer.past_due)}
    ):
        runtime = await get_runtime()
        tracker = ConversionTracker(
            runtime.retail, runtime.store, TrackingConfig.from_settings(runtime.settings)
        )
        started = time.monotonic()
        result = await tracker.run(utcnow())
        status = "off" if result.off else ("partial" if result.failed_customers else "ok")
        telemetry.TRACKING_RUNS.add(1, {"status": status})
        logger.info(
            "conversion tracking finished",
            extra={
                "event": TRACKING_EVENT,
                "status": status,
                "carts_checked": result.carts_checked,
                "customers": result.customers,
                "conversions_recorded": result.conversions_recorded,
                "carts_converted": result.settled.get("converted", 0),
                "carts_not_converted": result.settled.get("not_converted", 0),
                "failed_customers": result.failed_customers,
                "off_reason": result.reason or "",
                "duration_ms": round((time.monotonic() - started) * 1000),
            },
        )


def _bad(name: str, message: str, cid: str) -> RequestRejectedError:
    return reject(
        400,
        "validation",
        "The request is not valid",
        f"The query parameter {name} is not valid.",
        cid,
        errors=[FieldError(path=name, message=message)],
    )


def _instant(name: str, raw: str, cid: str, *, end: bool) -> datetime:
    """A date (midnight UTC; for ``to`` the midnight after it) or a time with an offset."""
    text = raw.strip()
    try:
        if _DATE.fullmatch(text):
            day = date.fromisoformat(text)
            midnight = datetime(day.year, day.month, day.day, tzinfo=UTC)
            return midnight + timedelta(days=1) if end else midnight
        if _DATETIME.fullmatch(text):
            return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)
    except ValueError:
        raise _bad(name, "is not a real date or time", cid) from None
    raise _bad(name, "must be a date (YYYY-MM-DD) or an ISO 8601 time with an offset", cid)


def report_range(
    params: dict[str, str], now: datetime, ouns: list[str], cid: str
) -> tuple[datetime, datetime, str | None]:
    raw_to, raw_from, raw_oun = params.get("to"), params.get("from"), params.get("oun")
    end = _instant("to", raw_to, cid, end=True) if raw_to else now
    start = _instant("from", raw_from, cid, end=False) if raw_from else end - DEFAULT_RANGE
    if start >= end:
        raise _bad("from", "must be before to", cid)
    if end - start > MAX_RANGE:
        raise _bad("from", "the range may span at most 366 days", cid)
    oun = raw_oun.strip() if raw_oun else None
    if oun is not None and oun not in ouns:
        raise _bad("oun", "is not one of the channels in OPERATING_UNIT_NUMBERS", cid)
    return start, end, oun


@bp.function_name("recovery_report")
@bp.route(route="reports/recovery", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
async def recovery_report(req: func.HttpRequest) -> func.HttpResponse:
    from shared.recovery.report import ReportTooLargeError, recovery_figures

    cid = correlation_id_for(req)
    try:
        runtime = await get_runtime()
        settings = runtime.settings
        start, end, oun = report_range(dict(req.params), utcnow(), settings.operating_unit_numbers, cid)
        try:
            report = await recovery_figures(
                runtime.store,
                start=start,
                end=end,
                oun=oun,
                attribution=timedelta(days=settings.attribution_days),
                holdout_percent=settings.holdout_percent,
            )
        except ReportTooLargeError as exc:
            raise reject(
                422,
                "report-too-large",
                "The range is too large",
                f"{exc}; ask for a shorter range.",
                cid,
                errors=[FieldError(path="from", message="narrow the range between from and to")],
            ) from None
        return func.HttpResponse(
            body=json.dumps(report.body()),
            status_code=200,
            mimetype="application/json",
            charset="utf-8",
            headers={"Cache-Control": "no-store", CORRELATION_HEADER: cid},
        )
    except RequestRejectedError as exc:
        return rejected_response(exc, cid, "recovery_report")
    except Exception as exc:
        return unexpected_response(exc, cid, "recovery_report")
