"""What detection and notification tell an operator: structured log records and metrics.

A record's fields go in ``extra=`` (Application Insights shows them as custom dimensions, and the
redaction of free text never touches them), with ids, counts, versions and reasons only; its
message is a fixed phrase. Metric dimensions are low-cardinality: channel (OUN), reason, status,
provider, step, never an id.
"""

from __future__ import annotations

import json
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from shared import telemetry
from shared.abandoned_carts.outcome import Outcome

if TYPE_CHECKING:
    from opentelemetry.trace import Span

    from shared.abandoned_carts.detect import ChannelOutcome, RunResult

RUN_EVENT = "detection_run"
OUTCOME_EVENT = "notify_outcome"
POISONED_EVENT = "message_poisoned"
# What an operator does about an "uncertain" outcome, in the record itself.
UNCERTAIN_ADVICE = (
    "the email went out once or not at all and is never sent again; the provider's activity for "
    "dedup_key tells which"
)


# ----- detection


def channel_span(oun: str, budget: int) -> AbstractContextManager[Span]:
    """The span of one channel's turn in a detection run (a run gives a busy channel several)."""
    return telemetry.span("detect channel", attributes={"connector.oun": oun, "connector.budget": budget})


def describe_channel(span: Span, outcome: ChannelOutcome) -> None:
    span.set_attributes(
        {
            "connector.found": outcome.found,
            "connector.queued": outcome.queued,
            "connector.pages": outcome.pages,
            "connector.skipped": sum(outcome.skipped.values()),
            "connector.stopped": outcome.stopped,
        }
    )


def run_record(result: RunResult) -> dict[str, Any]:
    """The custom dimensions of the ``detection run finished`` record."""
    failed = result.failed_ouns
    skipped = result.skipped
    channels = {
        oun: {
            "found": outcome.found,
            "queued": outcome.queued,
            "skipped": sum(outcome.skipped.values()),
            "pages": outcome.pages,
            "stopped": outcome.stopped,
            "left": outcome.left,
            "lag_s": round(lag_seconds(result, outcome), 3),
        }
        for oun, outcome in result.channels.items()
    }
    return {
        "event": RUN_EVENT,
        "run_id": result.run_id,
        "status": "failed" if failed else "succeeded",
        "carts_found": result.found,
        "carts_queued": result.queued,
        "carts_skipped": sum(skipped.values()),
        "carts_requeued": result.requeued,
        "channels_failed": len(failed),
        "failed_ouns": ",".join(failed),
        "duration_ms": result.duration_ms,
        # Per channel and per reason: one JSON object each, as a dimension (parse_json() in KQL).
        "channels": json.dumps(channels, separators=(",", ":"), sort_keys=True),
        "skipped_by_reason": json.dumps(dict(sorted(skipped.items())), separators=(",", ":")),
    }


def lag_seconds(result: RunResult, outcome: ChannelOutcome) -> float:
    """How far behind the channel's detection is: the run's end minus the newest instant it
    covered, the window's To bound when it read the whole window, else where it stopped."""
    covered = (
        outcome.window_to if outcome.stopped == "complete" else outcome.covered_to or outcome.window_from
    )
    return max(0.0, (result.finished_at - covered).total_seconds())


def record_run(result: RunResult) -> None:
    """The run's metrics: carts found, queued and skipped per channel, lag and backlog, the run."""
    failed = result.failed_ouns
    for oun, outcome in result.channels.items():
        channel = {"oun": oun}
        telemetry.CARTS_FOUND.add(outcome.found, channel)
        telemetry.CARTS_QUEUED.add(outcome.queued, channel)
        for reason, count in outcome.skipped.items():
            telemetry.CARTS_SKIPPED.add(count, {"oun": oun, "reason": reason})
        if oun not in failed:
            telemetry.DETECTION_LAG.record(lag_seconds(result, outcome), channel)
            telemetry.DETECTION_BACKLOG.record(outcome.left, channel)
    telemetry.DETECTION_RUNS.add(1, {"status": "failed" if failed else "succeeded"})
    telemetry.set_attributes(
        {
            "connector.run_id": result.run_id,
            "connector.found": result.found,
            "connector.queued": result.queued,
            "connector.requeued": result.requeued,
            "connector.channels_failed": len(failed),
        }
    )


# ----- notification


def outcome_record(outcome: Outcome, *, oun: str, provider: str) -> dict[str, Any]:
    """The custom dimensions of the ``notify outcome`` record."""
    return {
        "event": OUTCOME_EVENT,
        "outcome": outcome.status,
        "reason": outcome.reason or "",
        "oun": oun,
        "provider": provider,
        "step": outcome.step,
        "cart_id": outcome.cart_id,
        "cart_version": outcome.cart_version,
        # The optional parts the email went without, comma-separated ("" when it had them all).
        "degraded": ",".join(outcome.degraded),
    }


def record_outcome(record: dict[str, Any]) -> None:
    telemetry.NOTIFY_OUTCOMES.add(
        1,
        {
            "outcome": record["outcome"],
            "reason": record["reason"] or "none",
            "provider": record["provider"],
            "step": str(record["step"]),
            "degraded": "true" if record["degraded"] else "false",
            "oun": record["oun"],
        },
    )
    telemetry.set_attributes(
        {
            "connector.outcome": record["outcome"],
            "connector.reason": record["reason"] or None,
            "connector.degraded": record["degraded"] or None,
        }
    )


def poisoned_record(queue: str, dequeue_count: int, reason: str) -> dict[str, Any]:
    """A message the poison queue gets (now, or from the host after this last attempt), counted."""
    telemetry.MESSAGES_POISONED.add(1, {"queue": queue, "reason": reason})
    return {"event": POISONED_EVENT, "queue": queue, "dequeue_count": dequeue_count, "reason": reason}
