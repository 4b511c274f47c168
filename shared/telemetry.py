"""OpenTelemetry for the connector: one tracer and one meter, its instruments, client spans for the
upstream calls, and the trace context that travels in a queue message.

Everything here uses the OpenTelemetry API only, which is light and, with no SDK installed, records
nothing at almost no cost. :func:`configure_telemetry` (``function_app.py``, before the blueprints
are registered) switches the Azure Monitor distro on when ``APPLICATIONINSIGHTS_CONNECTION_STRING``
is set, as it is in Azure; the distro and the SDK are imported only then. Tests and the demo
install in-memory SDK providers of their own (``sandbox/telemetry.py``).

What goes out is built to hold no personal data (invariant 12): span and metric attributes are
ids, counts, statuses, channel numbers and route templates, never a URL's query or a path with a
key in it (:func:`route_template`), and an exception's text is redacted before it is recorded.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import re
import time
import traceback
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import metrics, trace
from opentelemetry.trace import Link, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from shared.privacy.redaction import redact

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.trace import Span

logger = logging.getLogger(__name__)

# The instrumentation scope: the tracer's and the meter's name (the workbook and alerts use it).
SCOPE = "d365_commerce_connector"
# The loggers whose records the distro exports: the app's own (the SDKs' go through the host).
APP_LOGGER = "shared"
# The longest route template kept; a longer one is cut (it is a dimension, not a URL).
_MAX_ROUTE = 160

_tracer = trace.get_tracer(SCOPE)
_meter = metrics.get_meter(SCOPE)
_propagator = TraceContextTextMapPropagator()


# ----- instruments (names, units and dimensions as in docs/reference/telemetry.md)

CARTS_FOUND = _meter.create_counter(
    "connector.carts.found", unit="{cart}", description="Carts found in the window"
)
CARTS_QUEUED = _meter.create_counter(
    "connector.carts.queued", unit="{cart}", description="Carts queued for notify"
)
CARTS_SKIPPED = _meter.create_counter(
    "connector.carts.skipped", unit="{cart}", description="Carts found and not queued, by reason"
)
DETECTION_LAG = _meter.create_histogram(
    "connector.detection.lag",
    unit="s",
    description="Now minus the newest instant a channel's detection covered",
)
DETECTION_BACKLOG = _meter.create_histogram(
    "connector.detection.backlog",
    unit="{cart}",
    description="Carts seen and left for the next run by the cap",
)
DETECTION_RUNS = _meter.create_counter("connector.detection.runs", unit="{run}", description="Detection runs")
NOTIFY_OUTCOMES = _meter.create_counter(
    "connector.notify.outcomes", unit="{message}", description="What became of each queue message"
)
PROVIDER_DURATION = _meter.create_histogram(
    "connector.provider.duration", unit="ms", description="Email provider calls (one per batch)"
)
PROVIDER_BATCH_SIZE = _meter.create_histogram(
    "connector.provider.batch_size", unit="{message}", description="Messages per email provider call"
)
CUSTOMERS_CREATED = _meter.create_counter(
    "connector.customers.created", unit="{request}", description="POST /api/customers answers"
)
CUSTOMERS_DURATION = _meter.create_histogram(
    "connector.customers.duration", unit="ms", description="POST /api/customers duration"
)
TOKENS_ACQUIRED = _meter.create_counter(
    "connector.tokens.acquired", unit="{token}", description="Entra ID token requests, by result"
)
SECRETS_FAILURES = _meter.create_counter(
    "connector.secrets.failures", unit="{read}", description="Key Vault reads that failed, by reason"
)
MESSAGES_POISONED = _meter.create_counter(
    "connector.messages.poisoned", unit="{message}", description="Queue messages that end in the poison queue"
)
# Recovery analytics: each tracked cart once, when it settles, and each conversion once, when it is
# recorded; the workbook derives conversion by group and the lift from them (shared/recovery/).
RECOVERY_SETTLED = _meter.create_counter(
    "connector.recovery.settled",
    unit="{cart}",
    description="Mailed and held-out carts whose attribution settled, converted or not",
)
RECOVERY_CONVERSIONS = _meter.create_counter(
    "connector.recovery.conversions", unit="{order}", description="Orders attributed to a tracked cart"
)
RECOVERY_REVENUE = _meter.create_counter(
    "connector.recovery.revenue",
    unit="{currency_unit}",
    description="Order totals attributed to tracked carts, in the order's currency",
)
TRACKING_RUNS = _meter.create_counter(
    "connector.recovery.tracking_runs", unit="{run}", description="Conversion tracking runs"
)
UPSTREAM_DURATION = _meter.create_histogram(
    "connector.upstream.duration", unit="ms", description="Upstream calls, retries included"
)


# ----- switching the exporter on


def configure_telemetry(environ: Mapping[str, str] | None = None) -> str:
    """Switch the Azure Monitor distro on when ``APPLICATIONINSIGHTS_CONNECTION_STRING`` is set.

    Returns what it did: ``"off"`` (no connection string: nothing is exported), ``"present"`` (a
    tracer provider is set already, e.g. by the Python worker: used as it is, never configured
    twice) or ``"azure_monitor"``. Application Insights has local authentication off, so the
    exporter signs in as the app's managed identity (``AZURE_CLIENT_ID``, the user-assigned one).
    Runs when ``function_app`` is imported: a failure is logged, never raised.
    """
    env = os.environ if environ is None else environ
    connection_string = env.get("APPLICATIONINSIGHTS_CONNECTION_STRING", "").strip()
    if not connection_string:
        return "off"
    if not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        return "present"
    try:
        _configure_azure_monitor(connection_string, env)
    except Exception as exc:  # the app must start without its telemetry rather than not at all
        logger.error("telemetry not configured: %s: %s", type(exc).__name__, redact(str(exc)))
        return "off"
    return "azure_monitor"


def sampling_ratio(env: Mapping[str, str]) -> float:
    """``TELEMETRY_SAMPLING_PERCENTAGE`` as a ratio; a bad value is reported and read as 100."""
    raw = env.get("TELEMETRY_SAMPLING_PERCENTAGE", "").strip()
    if not raw:
        return 1.0
    try:
        percentage = int(raw)
    except ValueError:
        percentage = 0
    if not 1 <= percentage <= 100:
        logger.warning("app setting TELEMETRY_SAMPLING_PERCENTAGE is %r, not 1 to 100: sampling 100%%", raw)
        return 1.0
    return percentage / 100


def _configure_azure_monitor(connection_string: str, env: Mapping[str, str]) -> None:
    from azure.identity import DefaultAzureCredential, ManagedIdentityCredential
    from azure.monitor.opentelemetry import configure_azure_monitor

    client_id = env.get("AZURE_CLIENT_ID", "").strip()
    credential = ManagedIdentityCredential(client_id=client_id) if client_id else DefaultAzureCredential()
    configure_azure_monitor(
        connection_string=connection_string,
        credential=credential,
        logger_name=APP_LOGGER,
        # Whole traces are sampled (1.0 keeps them all); log records (run summaries, outcomes) and
        # metrics never are.
        sampling_ratio=sampling_ratio(env),
        enable_trace_based_sampling_for_logs=False,
        # The connector makes its own client spans, with route templates; the libraries' spans
        # would repeat them with full URLs (a Cosmos DB document URL holds the key).
        instrumentation_options={
            name: {"enabled": False}
            for name in (
                "azure_sdk",
                "django",
                "fastapi",
                "flask",
                "httpx",
                "psycopg2",
                "requests",
                "urllib",
                "urllib3",
            )
        },
    )


# ----- spans


@contextmanager
def span(
    name: str,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    attributes: Mapping[str, Any] | None = None,
    parent: Context | None = None,
    links: Sequence[Link] = (),
) -> Iterator[Span]:
    """A span made current for the block; an exception leaves it with status ERROR and the
    exception recorded with a redacted message (the SDK's own recording would keep ``str(exc)``)."""
    with _tracer.start_as_current_span(
        name,
        context=parent,
        kind=kind,
        attributes=_clean(attributes),
        links=links,
        record_exception=False,
        set_status_on_exception=False,
    ) as current:
        try:
            yield current
        except BaseException as exc:
            if not _cancelled(exc):
                record_failure(current, exc)
            raise


def invocation_span(
    name: str, *, trigger: str, parent: Context | None = None, attributes: Mapping[str, Any] | None = None
) -> AbstractContextManager[Span]:
    """The span of one function invocation.

    In Azure the Python worker makes the host's invocation span current (``PYTHON_ENABLE_OPENTELEMETRY``):
    then this span is an internal child of it (the host reports the request), or, given a
    ``parent`` (the detection run a queue message came from), a child of that with a link to the
    host's. Without a host span (Core Tools, the demo, the tests) it is the request itself: a
    server span, or a consumer span for a queue message.
    """
    host = trace.get_current_span().get_span_context()
    hosted = host.is_valid
    own = SpanKind.CONSUMER if trigger == "pubsub" else SpanKind.SERVER
    kind = SpanKind.INTERNAL if hosted else own
    links = [Link(host)] if hosted and parent is not None else []
    return span(
        name,
        kind=kind,
        parent=parent,
        links=links,
        attributes={"faas.trigger": trigger, "faas.name": name, **(attributes or {})},
    )


def current_link() -> Link | None:
    """A link to the current span, for work done later on behalf of several (a batch)."""
    context = trace.get_current_span().get_span_context()
    return Link(context) if context.is_valid else None


def set_error(current: Span, description: str) -> None:
    current.set_status(Status(StatusCode.ERROR, description))


def record_failure(current: Span, exc: BaseException) -> None:
    """Status ERROR, and the exception with its type, its message and its stack, both redacted (a
    stack ends with the message, and can quote a line of code that holds a literal)."""
    message = redact(str(exc))
    stack = redact("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
    current.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {message}"[:300]))
    current.record_exception(exc, attributes={"exception.message": message, "exception.stacktrace": stack})


def _cancelled(exc: BaseException) -> bool:
    return isinstance(exc, asyncio.CancelledError | GeneratorExit)


def _clean(attributes: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Attributes without the unset ones (OpenTelemetry refuses None)."""
    if not attributes:
        return None
    return {key: value for key, value in attributes.items() if value is not None}


def set_attributes(attributes: Mapping[str, Any]) -> None:
    current = trace.get_current_span()
    if current.is_recording():
        current.set_attributes(_clean(attributes) or {})


# ----- upstream calls

# The service names the clients use, as the one low-cardinality word the metrics and alerts use.
_SERVICES = {
    "retail server": "retail_server",
    "f&o": "finance_ops",
    "emarsys": "emarsys",
    "emarsys token": "emarsys",
    "sendgrid": "sendgrid",
    "email webhook": "webhook",
    "entra id (caller tokens)": "entra",
    "entra id": "entra",
    "key vault": "key_vault",
    "state store": "state_store",
}
_NOT_A_WORD = re.compile(r"[^a-z0-9]{1,64}")


@functools.lru_cache(maxsize=64)
def service_key(service: str) -> str:
    """``"Retail Server"`` -> ``retail_server``: the dimension value of a client's service name."""
    lowered = service.strip().lower()[:64]
    known = _SERVICES.get(lowered)
    if known is not None:
        return known
    return _NOT_A_WORD.sub("_", lowered).strip("_")[:40] or "unknown"


# OData keys and parameters (``Products(68719493156)``, ``Customers('C0001')``,
# ``GetMediaLocations(channelId=5637144592,catalogId=0)``), and path segments that are ids (digits,
# GUIDs, anything with an @). Every pattern is bounded, so each runs in linear time (invariant 11).
_QUOTED = re.compile(r"'[^']{0,256}'")
_NUMBER = re.compile(r"(?<![A-Za-z0-9_.])-?\d{1,32}(?:\.\d{1,16})?(?![A-Za-z0-9_])")
_GUID = re.compile(r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}")
_AT_SEGMENT = re.compile(r"[^/()=,]{0,256}@[^/()=,]{0,256}")


@functools.lru_cache(maxsize=1024)
def route_template(route: str) -> str:
    """A call's route with every key, id and parameter value replaced by ``{id}``: a low-cardinality
    name that never holds a customer's data, e.g. ``Products({id})/GetMediaLocations(channelId={id},
    catalogId={id})``. A query string is dropped."""
    text = route.split("?", 1)[0][:1024]
    text = _AT_SEGMENT.sub("{id}", text)
    text = _QUOTED.sub("{id}", text)
    text = _GUID.sub("{id}", text)
    text = _NUMBER.sub("{id}", text)
    return text[:_MAX_ROUTE]


class UpstreamCall:
    """One call to an upstream, retries included: its client span and its outcome."""

    def __init__(self, current: Span) -> None:
        self.span = current
        # The outcome dimension: the HTTP status, or what went wrong ("timeout", "not_found"...).
        self.status = "ok"
        self.attempts = 1
        self._explained = False

    def failed(self, status: str) -> None:
        """The call failed with this status (an error code the client read); the exception it
        raises then keeps it instead of naming its own class."""
        self.status = status
        self._explained = True

    @property
    def explained(self) -> bool:
        return self._explained

    def answered(self, status: int) -> None:
        self.status = str(status)
        self.span.set_attribute("http.response.status_code", status)

    def retry(self, attempt: int, wait_seconds: float, reason: str) -> None:
        """Attempt ``attempt`` failed (``reason``, never a body) and the next one waits ``wait_seconds``."""
        self.attempts = attempt + 1
        self.span.add_event(
            "retry",
            {
                "connector.attempt": attempt,
                "connector.retry_wait_s": round(wait_seconds, 3),
                "connector.reason": reason,
            },
        )


@contextmanager
def upstream_call(
    service: str,
    route: str,
    *,
    method: str | None = None,
    server: str | None = None,
    oun: str | None = None,
    attributes: Mapping[str, Any] | None = None,
    expected: tuple[type[BaseException], ...] = (),
) -> Iterator[UpstreamCall]:
    """A client span named ``"<METHOD> <route template>"`` around one upstream call, and its
    duration in ``connector.upstream.duration`` (``service``, ``route``, ``status``).

    An ``expected`` exception (a conditional write that lost its race, say) is an answer, not a
    failure: it names the status and leaves the span's status unset."""
    key = service_key(service)
    template = route_template(route)
    name = f"{method} {template}" if method else f"{key} {template}"
    started = time.perf_counter()
    with _tracer.start_as_current_span(
        name,
        kind=SpanKind.CLIENT,
        attributes=_clean(
            {
                "connector.service": key,
                "connector.route": template,
                "url.template": template,
                "http.request.method": method,
                "server.address": server,
                "connector.oun": oun,
                **(attributes or {}),
            }
        ),
        record_exception=False,
        set_status_on_exception=False,
    ) as current:
        call = UpstreamCall(current)
        try:
            yield call
        except BaseException as exc:
            if _cancelled(exc):
                call.status = "cancelled"
            else:
                if not call.explained:
                    # The exception is the call's outcome, whatever an earlier attempt answered.
                    call.status = failure_status(exc)
                if not isinstance(exc, expected):
                    record_failure(current, exc)
            raise
        finally:
            current.set_attribute("connector.status", call.status)
            current.set_attribute("connector.attempts", call.attempts)
            if call.attempts > 1:
                current.set_attribute("http.request.resend_count", call.attempts - 1)
            if call.status[:1] in {"4", "5"}:
                current.set_status(Status(StatusCode.ERROR, f"HTTP {call.status}"))
            UPSTREAM_DURATION.record(
                (time.perf_counter() - started) * 1000, {"service": key, "route": name, "status": call.status}
            )


def failure_status(exc: BaseException) -> str:
    """A short, stable word for an exception: its class name in snake case."""
    name = type(exc).__name__
    if name.endswith("Error"):
        name = name[: -len("Error")]
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()[:40] or "error"


# ----- trace context in queue messages

# version-traceid-parentid-flags, lower-case hex (W3C Trace Context, level 1).
TRACEPARENT = re.compile(r"^00-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}$")


def current_traceparent() -> str | None:
    """The W3C ``traceparent`` of the current span, or None when there is none."""
    carrier: dict[str, str] = {}
    _propagator.inject(carrier)
    value = carrier.get("traceparent")
    return value if value and TRACEPARENT.match(value) else None


def context_from(traceparent: str | None) -> Context | None:
    """The remote parent a ``traceparent`` names, or None (no value, or not a valid one)."""
    if not traceparent or not TRACEPARENT.match(traceparent):
        return None
    extracted = _propagator.extract({"traceparent": traceparent}, context=otel_context.Context())
    if not trace.get_current_span(extracted).get_span_context().is_valid:
        return None
    return extracted


# ----- which service a token is for

_SCOPES: dict[str, str] = {}


def name_scope(scope: str, service: str) -> None:
    """Remember that tokens for ``scope`` are for ``service`` (the clients say so when they are built)."""
    _SCOPES[scope] = service


def service_of_scope(scope: str) -> str:
    return _SCOPES.get(scope, "other")
