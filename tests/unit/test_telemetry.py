"""shared/telemetry.py: route templates without data, the queue message's trace context, the
client spans' outcome, and switching the Azure Monitor distro on only when it is configured."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from opentelemetry.trace import SpanKind, StatusCode

from sandbox.telemetry import LocalTelemetry
from shared import telemetry as app_telemetry
from shared.abandoned_carts.messages import CartMessage
from shared.state.sqlite import SqliteStore
from shared.state.store import ConflictError, WriteOp
from shared.state.traced import TracedStore
from tests.regex_bounds import UNBOUNDED, quantifier_bounds
from tests.unit.fresh_interpreter import ROOT, run_python


@pytest.mark.parametrize(
    ("route", "template"),
    [
        ("Carts/Search", "Carts/Search"),
        (
            "Products(68719493156)/GetMediaLocations(channelId=5637144592,catalogId=0)",
            "Products({id})/GetMediaLocations(channelId={id},catalogId={id})",
        ),
        ("Customers('C0001')", "Customers({id})"),
        ("/api/v3/event/4711/trigger", "/api/v3/event/{id}/trigger"),
        ("/5f3a8c1e-2b7d-4e9a-8c61-0d4b7e2f9a13/oauth2/v2.0/token", "/{id}/oauth2/v2.0/token"),
        ("/v2/contact/ada@example.org/delete", "/v2/contact/{id}/delete"),
        ("/data/CustomersV3?$filter=PersonalNumber eq '123'", "/data/CustomersV3"),
        ("OrgUnits/GetOrgUnitConfiguration", "OrgUnits/GetOrgUnitConfiguration"),
    ],
)
def test_a_route_template_holds_no_key_id_or_address(route: str, template: str) -> None:
    assert app_telemetry.route_template(route) == template


def test_a_route_template_is_bounded() -> None:
    assert len(app_telemetry.route_template("/x" + "a" * 100_000)) <= 160


def test_every_telemetry_pattern_runs_in_linear_time() -> None:
    patterns = [
        value for value in vars(app_telemetry).values() if hasattr(value, "pattern") and hasattr(value, "sub")
    ]
    assert len(patterns) >= 6
    for pattern in patterns:
        assert all(high != UNBOUNDED for _, high in quantifier_bounds(pattern)), pattern.pattern


@pytest.mark.parametrize(
    ("service", "key"),
    [
        ("Retail Server", "retail_server"),
        ("F&O", "finance_ops"),
        ("emarsys token", "emarsys"),
        ("email webhook", "webhook"),
        ("Entra ID (caller tokens)", "entra"),
        ("Key Vault", "key_vault"),
        ("state store", "state_store"),
        ("Some Other Thing", "some_other_thing"),
    ],
)
def test_service_names_become_one_low_cardinality_word(service: str, key: str) -> None:
    assert app_telemetry.service_key(service) == key


def test_a_message_carries_the_current_span_as_its_traceparent(telemetry: LocalTelemetry) -> None:
    message = CartMessage(cart_id="c-1", cart_version=12345678, oun="128", step=1)
    assert "traceparent" not in json.loads(message.encode()), "no span, no trace context"
    with app_telemetry.span("detect_abandoned_carts") as span:
        encoded = json.loads(message.encode())
    assert encoded["v"] == 2
    trace_id = format(span.get_span_context().trace_id, "032x")
    span_id = format(span.get_span_context().span_id, "016x")
    assert encoded["traceparent"].startswith(f"00-{trace_id}-{span_id}-")
    parent = app_telemetry.context_from(encoded["traceparent"])
    assert parent is not None
    with app_telemetry.span("child", parent=parent) as child:
        assert child.get_span_context().trace_id == span.get_span_context().trace_id


@pytest.mark.parametrize(
    "value",
    [
        "",
        "00-not-a-trace-01",
        "00-00000000000000000000000000000000-0000000000000001-01",
        "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
        "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "00-0AF7651916CD43DD8448EB211C80319C-B7AD6B7169203331-01",
    ],
)
def test_a_traceparent_that_is_not_w3c_is_ignored(value: str) -> None:
    assert app_telemetry.context_from(value) is None
    message = CartMessage.model_validate(
        {"v": 2, "cartId": "c", "cartVersion": 1, "oun": "128", "step": 1, "traceparent": value}
    )
    assert message.traceparent is None


def test_an_upstream_call_names_its_status_and_records_redacted_failures(telemetry: LocalTelemetry) -> None:
    with (
        pytest.raises(RuntimeError),
        app_telemetry.upstream_call("Retail Server", "Carts/Search", method="POST"),
    ):
        raise RuntimeError("no answer for ada@example.org")
    [span] = telemetry.spans()
    assert span.kind is SpanKind.CLIENT and span.name == "POST Carts/Search"
    assert span.status.status_code is StatusCode.ERROR
    assert dict(span.attributes or {})["connector.status"] == "runtime"
    [event] = span.events
    assert event.name == "exception"
    assert "ada@example.org" not in json.dumps(dict(event.attributes or {}))
    [point] = [p for p in telemetry.points() if p.name == "connector.upstream.duration"]
    assert point.attributes == {"service": "retail_server", "route": "POST Carts/Search", "status": "runtime"}


async def test_a_lost_conditional_write_is_an_answer_not_a_failure(
    tmp_path: Path,
    telemetry: LocalTelemetry,
) -> None:
    store = TracedStore(SqliteStore(tmp_path / "s.sqlite3"), system="sqlite")
    await store.create("ledger", "cart-1", "k", {"a": 1})
    with pytest.raises(ConflictError):
        await store.create("ledger", "cart-1", "k", {"a": 2})
    await store.close()
    spans = [s for s in telemetry.spans() if s.name == "state_store create ledger"]
    assert [dict(s.attributes or {})["connector.status"] for s in spans] == ["ok", "conflict"]
    assert all(s.status.status_code is StatusCode.UNSET for s in spans)
    assert all("cart-1" not in json.dumps(dict(s.attributes or {})) for s in spans), "no partition, no key"
    assert {dict(s.attributes or {})["db.system.name"] for s in spans} == {"sqlite"}


async def test_batch_and_query_spans_say_how_many_documents_they_named_found_and_lost(
    tmp_path: Path,
    telemetry: LocalTelemetry,
) -> None:
    store = TracedStore(SqliteStore(tmp_path / "s.sqlite3"), system="sqlite")
    await store.create("state", "p", "taken", {"a": 1})
    ops = [
        WriteOp("create", "p", "new", {"a": 1}),
        WriteOp("create", "q", "taken-elsewhere", {"a": 1}),
        WriteOp("create", "p", "taken", {"a": 2}),
    ]
    # Atomic per partition: p's conflict refuses both of p's writes, q's goes through.
    await store.write_many("state", ops)
    await store.read_many("state", [("p", "taken"), ("q", "taken-elsewhere"), ("p", "new")])
    await store.query("state", partition="p")
    await store.read("state", "p", "taken")
    await store.close()

    def attributes(name: str) -> dict[str, object]:
        [span] = [s for s in telemetry.spans() if s.name == f"state_store {name}"]
        return dict(span.attributes or {})

    written = attributes("write_many state")
    assert (written["connector.items"], written["connector.refused"]) == (3, 2)
    read_many = attributes("read_many state")
    assert (read_many["connector.items"], read_many["connector.found"]) == (3, 2)
    assert attributes("query state")["connector.found"] == 1
    read = attributes("read state")
    assert read["connector.items"] == 1 and "connector.found" not in read


def test_without_a_connection_string_nothing_is_configured() -> None:
    assert app_telemetry.configure_telemetry({}) == "off"
    assert app_telemetry.configure_telemetry({"APPLICATIONINSIGHTS_CONNECTION_STRING": "  "}) == "off"


def test_a_provider_set_already_is_used_as_it_is() -> None:
    # The suite's in-memory providers stand for one the Python worker set up.
    assert (
        app_telemetry.configure_telemetry({"APPLICATIONINSIGHTS_CONNECTION_STRING": "InstrumentationKey=x"})
        == "present"
    )


@pytest.mark.parametrize(("raw", "ratio"), [("", 1.0), ("100", 1.0), ("25", 0.25), ("0", 1.0), ("x", 1.0)])
def test_the_sampling_percentage_is_read_leniently(
    raw: str, ratio: float, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        assert app_telemetry.sampling_ratio({"TELEMETRY_SAMPLING_PERCENTAGE": raw}) == ratio
    assert bool(caplog.records) == (raw in ("0", "x"))


def test_with_a_connection_string_the_distro_exports_as_the_managed_identity() -> None:
    """In a fresh interpreter, as in Azure: ``import function_app`` with the connection string set
    configures the distro with the identity's credential, the app's loggers, every trace kept and
    the libraries' own instrumentations off."""
    code = """
        import json, logging, os, sys
        os.environ["APPLICATIONINSIGHTS_CONNECTION_STRING"] = (
            "InstrumentationKey=00000000-0000-0000-0000-000000000000;"
            "IngestionEndpoint=https://127.0.0.1:9/;LiveEndpoint=https://127.0.0.1:9/"
        )
        os.environ["AZURE_CLIENT_ID"] = "11111111-2222-3333-4444-555555555555"
        os.environ["TELEMETRY_SAMPLING_PERCENTAGE"] = "100"
        import azure.monitor.opentelemetry as distro
        seen = {}
        real = distro.configure_azure_monitor
        def spy(**kwargs):
            seen.update(kwargs)
            real(**kwargs)
        distro.configure_azure_monitor = spy
        import function_app
        from opentelemetry import trace
        provider = trace.get_tracer_provider()
        handlers = [type(h).__name__ for h in logging.getLogger("shared").handlers]
        print(json.dumps({
            "provider": type(provider).__module__,
            "sampler": provider.sampler.get_description(),
            "credential": type(seen["credential"]).__name__,
            "client_id": getattr(seen["credential"], "_client_id", None)
                or getattr(getattr(seen["credential"], "_credential", None), "_client_id", None),
            "logger": seen["logger_name"],
            "trace_based_logs": seen["enable_trace_based_sampling_for_logs"],
            "off": sorted(k for k, v in seen["instrumentation_options"].items() if not v["enabled"]),
            "handlers": handlers,
        }))
        sys.stdout.flush()
        os._exit(0)
    """
    seen = json.loads(run_python(code).strip().splitlines()[-1])
    assert seen["provider"].startswith("opentelemetry.sdk")
    assert "1.0" in seen["sampler"] or "ratio" in seen["sampler"].lower()
    assert seen["credential"] == "ManagedIdentityCredential"
    assert seen["logger"] == "shared" and seen["trace_based_logs"] is False
    assert {"azure_sdk", "requests", "urllib3"} <= set(seen["off"])
    assert "LoggingHandler" in seen["handlers"]


def test_host_json_emits_opentelemetry_and_never_samples_records_requests_or_exceptions() -> None:
    host = json.loads((ROOT / "host.json").read_text(encoding="utf-8"))
    assert host["telemetryMode"] == "OpenTelemetry"
    sampling = host["logging"]["applicationInsights"]["samplingSettings"]
    kept = (
        set(sampling["excludedTypes"].split(";"))
        if sampling["isEnabled"]
        else {"Request", "Exception", "Trace"}
    )
    # Run summaries and notify outcomes are trace records; failed invocations requests and exceptions.
    assert {"Request", "Exception", "Trace"} <= kept
