"""Telemetry kept in memory, for the demo (``--telemetry console``) and the tests.

:func:`install` sets the OpenTelemetry SDK's tracer and meter providers once per process, with an
in-memory span exporter and an in-memory metric reader (delta temporality: each read returns what
was recorded since the one before). The app's code is unchanged: it uses the API, and its spans and
metrics land here instead of in Application Insights. Helpers turn them into what the demo prints:
one cart's whole trace as an indented tree, and the metrics' totals.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter


@dataclass(frozen=True)
class MetricPoint:
    """One data point: a counter's sum, or a histogram's count and sum, with its dimensions."""

    name: str
    attributes: dict[str, Any]
    value: float
    count: int = 0
    kind: str = "sum"


@dataclass
class LocalTelemetry:
    exporter: InMemorySpanExporter
    reader: InMemoryMetricReader
    _points: list[MetricPoint] = field(default_factory=list)

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def points(self) -> list[MetricPoint]:
        """Every metric point recorded since the last :meth:`clear`."""
        self._points.extend(_read(self.reader))
        return list(self._points)

    def clear(self) -> None:
        self.exporter.clear()
        _read(self.reader)
        self._points.clear()


_installed: LocalTelemetry | None = None


def install() -> LocalTelemetry:
    """The process's in-memory telemetry, set up on first use (the SDK's providers can be set once)."""
    global _installed
    if _installed is not None:
        return _installed
    from opentelemetry import metrics, trace
    from opentelemetry.sdk.metrics import Counter, Histogram, MeterProvider, UpDownCounter
    from opentelemetry.sdk.metrics.export import AggregationTemporality, InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    if not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        raise RuntimeError("a tracer provider is set already: in-memory telemetry must be installed first")
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    delta = AggregationTemporality.DELTA
    reader = InMemoryMetricReader(
        preferred_temporality={Counter: delta, Histogram: delta, UpDownCounter: delta}
    )
    trace.set_tracer_provider(tracer_provider)
    metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
    _installed = LocalTelemetry(exporter, reader)
    return _installed


def _read(reader: InMemoryMetricReader) -> list[MetricPoint]:
    data = reader.get_metrics_data()
    points: list[MetricPoint] = []
    if data is None:
        return points
    from opentelemetry.sdk.metrics.export import HistogramDataPoint, NumberDataPoint

    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    attributes = dict(point.attributes or {})
                    if isinstance(point, HistogramDataPoint):
                        points.append(
                            MetricPoint(
                                metric.name, attributes, float(point.sum), int(point.count), "histogram"
                            )
                        )
                    elif isinstance(point, NumberDataPoint):
                        points.append(MetricPoint(metric.name, attributes, float(point.value)))
    return points


# ----- reading spans


def children_of(spans: Iterable[ReadableSpan]) -> dict[int | None, list[ReadableSpan]]:
    """Spans by their parent's span id (None for a root), each list in start order."""
    tree: dict[int | None, list[ReadableSpan]] = defaultdict(list)
    for span in spans:
        tree[span.parent.span_id if span.parent is not None else None].append(span)
    for siblings in tree.values():
        siblings.sort(key=lambda s: s.start_time or 0)
    return tree


def journey(spans: list[ReadableSpan], cart_id: str) -> list[tuple[int, ReadableSpan]]:
    """One cart's trace, as (depth, span) in tree order: the detection run and the channel turn that
    queued it, its notify invocation and everything under it, and the provider call that carried
    its email (which may hang under another message's invocation when it went in one batch)."""
    notify = next(
        (s for s in spans if s.name == "notify_abandoned_cart" and _attr(s, "connector.cart_id") == cart_id),
        None,
    )
    if notify is None or notify.context is None:
        return []
    by_id = {s.context.span_id: s for s in spans if s.context is not None}
    keep: set[int] = set()
    ancestor: ReadableSpan | None = notify
    while ancestor is not None and ancestor.context is not None:
        keep.add(ancestor.context.span_id)
        ancestor = by_id.get(ancestor.parent.span_id) if ancestor.parent is not None else None
    tree = children_of(
        s for s in spans if s.context is not None and s.context.trace_id == notify.context.trace_id
    )
    mine = {notify.context.span_id}
    pending = [notify.context.span_id]
    while pending:
        for child in tree.get(pending.pop(), []):
            assert child.context is not None
            mine.add(child.context.span_id)
            pending.append(child.context.span_id)
    # A batch's provider call links to every invocation whose message it carried.
    for span in spans:
        if span.context is not None and any(link.context.span_id in mine for link in span.links):
            while span is not None and span.context is not None and span.context.span_id not in keep:
                keep.add(span.context.span_id)
                span = by_id.get(span.parent.span_id) if span.parent is not None else None  # type: ignore[assignment]
    keep |= mine
    ordered: list[tuple[int, ReadableSpan]] = []

    def walk(parent: int | None, depth: int) -> None:
        for child in tree.get(parent, []):
            assert child.context is not None
            if child.context.span_id in keep:
                ordered.append((depth, child))
                walk(child.context.span_id, depth + 1)

    walk(None, 0)
    return ordered


def describe(span: ReadableSpan) -> str:
    """A span on one line: kind, name, duration and the attributes an operator reads first."""
    duration = ((span.end_time or 0) - (span.start_time or 0)) / 1e6
    kind = span.kind.name.lower()
    details = [
        f"{key.split('.')[-1]}={value!s}"
        for key, value in (span.attributes or {}).items()
        if key
        in (
            "connector.oun",
            "connector.status",
            "connector.attempts",
            "connector.found",
            "connector.queued",
            "connector.outcome",
            "connector.reason",
            "connector.step",
            "connector.batch_size",
            "connector.items",
        )
    ]
    events = [event.name for event in span.events]
    if events:
        details.append("events=" + ",".join(events))
    status = "" if span.status.is_ok else f" ERROR {span.status.description or ''}".rstrip()
    return f"{span.name} ({kind}, {duration:.1f} ms){status}" + (f" [{' '.join(details)}]" if details else "")


def _attr(span: ReadableSpan, key: str) -> Any:
    return (span.attributes or {}).get(key)


# ----- what the privacy guard scans


def span_text(span: ReadableSpan) -> str:
    """Everything a span exports that could hold data: its name, attributes, events, status, links."""
    parts: list[str] = [span.name, json.dumps(dict(span.attributes or {}), default=str)]
    for event in span.events:
        parts.append(event.name)
        parts.append(json.dumps(dict(event.attributes or {}), default=str))
    parts.append(span.status.description or "")
    for link in span.links:
        parts.append(json.dumps(dict(link.attributes or {}), default=str))
    return " ".join(parts)


def point_text(point: MetricPoint) -> str:
    return f"{point.name} {json.dumps(point.attributes, default=str)}"


def totals(points: Iterable[MetricPoint]) -> dict[tuple[str, tuple[tuple[str, Any], ...]], float]:
    """Counter sums (a histogram's count) per metric and dimensions."""
    summed: dict[tuple[str, tuple[tuple[str, Any], ...]], float] = defaultdict(float)
    for point in points:
        key = (point.name, tuple(sorted(point.attributes.items())))
        summed[key] += point.count if point.kind == "histogram" else point.value
    return dict(summed)


def write_json_lines(spans: Iterable[ReadableSpan], points: Iterable[MetricPoint], folder: Path) -> Path:
    """Every span (the SDK's JSON form) and metric point as JSON lines in ``folder``; the spans' file."""
    folder.mkdir(parents=True, exist_ok=True)
    span_file = folder / "spans.jsonl"
    span_file.write_text(
        "".join(json.dumps(json.loads(span.to_json())) + "\n" for span in spans), encoding="utf-8"
    )
    (folder / "metrics.jsonl").write_text(
        "".join(json.dumps(_point_json(point)) + "\n" for point in points), encoding="utf-8"
    )
    return span_file


def _point_json(point: MetricPoint) -> Mapping[str, Any]:
    return {
        "name": point.name,
        "attributes": point.attributes,
        "kind": point.kind,
        "value": point.value,
        **({"count": point.count} if point.kind == "histogram" else {}),
    }
