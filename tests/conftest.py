"""Shared fixtures: a fresh sandbox per test, settings and a runtime pointed at it, and a guard
that fails any test whose log records, spans or metrics contain a sandbox customer's email, name
or phone. The whole suite runs with in-memory OpenTelemetry (``sandbox/telemetry.py``), so every
span and metric the code makes is exported, and checked."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from sandbox import telemetry as local_telemetry
from sandbox.bindings import OutBinding
from sandbox.server import Sandbox
from shared.logging_setup import configure_logging
from shared.runtime import Runtime, set_runtime
from shared.settings import Settings

configure_logging()
TELEMETRY = local_telemetry.install()

# What every LogRecord has; anything else on a record came in through ``extra=`` (a custom dimension).
_STANDARD_RECORD_FIELDS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
}


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The fields a record got through ``extra=``: what Application Insights shows as custom dimensions."""
    return {key: value for key, value in vars(record).items() if key not in _STANDARD_RECORD_FIELDS}


def event_records(records: Iterable[logging.LogRecord], event: str) -> list[dict[str, Any]]:
    """The custom dimensions (:func:`extra_fields`) of the records whose ``event`` is ``event``."""
    return [extra_fields(r) for r in records if getattr(r, "event", None) == event]


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.lines: list[str] = []
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        line = self.format(record)
        extra = extra_fields(record)
        # The custom dimensions are exported too: the guard scans them with the message.
        self.lines.append(f"{line} {json.dumps(extra, default=str, sort_keys=True)}" if extra else line)


@contextmanager
def captured_logs() -> Iterator[_Capture]:
    """Every record of every logger at every level, while the block runs."""
    capture = _Capture()
    root = logging.getLogger()
    # The app's own logger is set to INFO at import; DEBUG records must be checked too.
    app_logger = logging.getLogger("shared")
    previous_levels = (root.level, app_logger.level)
    root.addHandler(capture)
    root.setLevel(logging.DEBUG)
    app_logger.setLevel(logging.DEBUG)
    try:
        yield capture
    finally:
        root.removeHandler(capture)
        root.setLevel(previous_levels[0])
        app_logger.setLevel(previous_levels[1])


@pytest.fixture
def extra_personal_data() -> tuple[str, ...]:
    """Personal data a directory's tests send that no sandbox customer holds (a conftest overrides
    this); the guard looks for it in any case, with or without a sandbox."""
    return ()


@pytest.fixture(autouse=True)
def log_privacy_guard(
    request: pytest.FixtureRequest, extra_personal_data: tuple[str, ...]
) -> Iterator[_Capture]:
    """Capture every log record (custom dimensions included), span and metric point of the test;
    fail if one holds a sandbox customer's personal data or one of ``extra_personal_data``.

    The sandbox is taken at setup: by teardown it has been torn down already."""
    running: Sandbox | None = (
        request.getfixturevalue("sandbox") if "sandbox" in request.fixturenames else None
    )
    TELEMETRY.clear()
    with captured_logs() as capture:
        yield capture
    if extra_personal_data:
        extras = [re.compile(re.escape(value), re.IGNORECASE) for value in extra_personal_data]
        exported = capture.lines + exported_telemetry()
        leaks = [line for line in exported if any(p.search(line) for p in extras)]
        assert not leaks, f"personal data in log records, spans or metrics: {leaks[:5]}"
    if running is not None:
        leaks = find_personal_data(capture.lines, running)
        assert not leaks, f"personal data in log records: {leaks[:5]}"
        leaks = find_personal_data(exported_telemetry(), running)
        assert not leaks, f"personal data in exported spans or metrics: {leaks[:5]}"


def exported_telemetry() -> list[str]:
    """Every span and metric point the test exported, as text to scan for personal data."""
    exported = [local_telemetry.span_text(span) for span in TELEMETRY.spans()]
    return exported + [local_telemetry.point_text(point) for point in TELEMETRY.points()]


@pytest.fixture
def telemetry() -> local_telemetry.LocalTelemetry:
    """The spans and metric points of this test (cleared when it starts)."""
    return TELEMETRY


def personal_data_needles(sandbox: Sandbox) -> list[tuple[str, bool, re.Pattern[str]]]:
    """Each sandbox customer's email, phone, full name and (long) last name: the literal text, whether
    it matches in any case, and the pattern that confirms a match (word boundaries for names)."""
    needles: list[tuple[str, bool, re.Pattern[str]]] = []
    for customer in (
        sandbox.data.customers.values()
        if isinstance(sandbox.data.customers, dict)
        else sandbox.data.customers
    ):
        fields = _customer_fields(customer)
        for key in ("Email", "Phone"):
            if fields.get(key):
                literal = str(fields[key])
                needles.append((literal, True, re.compile(re.escape(literal), re.IGNORECASE)))
        if fields.get("FirstName") and fields.get("LastName"):
            full = f"{fields['FirstName']} {fields['LastName']}"
            needles.append((full, False, re.compile(r"\b" + re.escape(full) + r"\b")))
        if fields.get("LastName") and len(str(fields["LastName"])) >= 5:
            last = str(fields["LastName"])
            needles.append((last, False, re.compile(r"\b" + re.escape(last) + r"\b")))
    return needles


def personal_data_patterns(sandbox: Sandbox) -> list[re.Pattern[str]]:
    return [pattern for _, _, pattern in personal_data_needles(sandbox)]


def _customer_fields(customer: Any) -> dict[str, Any]:
    if isinstance(customer, dict):
        return customer
    dump = getattr(customer, "model_dump", None)
    if dump is not None:
        result: dict[str, Any] = dump(by_alias=True)
        return result
    return {
        "Email": getattr(customer, "email", None),
        "Phone": getattr(customer, "phone", None),
        "FirstName": getattr(customer, "first_name", None),
        "LastName": getattr(customer, "last_name", None),
    }


def find_personal_data(lines: list[str], sandbox: Sandbox) -> list[str]:
    """The lines holding a sandbox customer's personal data.

    A test with hundreds of customers logs tens of thousands of lines: each customer's text is
    looked for in all of them at once (a substring search), and only the patterns whose text occurs
    at all are matched line by line."""
    text = "\n".join(lines)
    lowered = text.casefold()
    found = [
        pattern
        for literal, any_case, pattern in personal_data_needles(sandbox)
        if (literal.casefold() in lowered if any_case else literal in text)
    ]
    return [line for line in lines if any(p.search(line) for p in found)] if found else []


@pytest.fixture(scope="session")
def registered_functions() -> dict[str, Any]:
    """``function_app.app``'s functions by name. ``get_functions()`` may run once per app only."""
    import function_app

    function_app.app.functions_bindings = None  # type: ignore[attr-defined]
    return {f.get_function_name(): f for f in function_app.app.get_functions()}


# A func.Out as the host provides one (the demo uses it too).
OutStub = OutBinding


@pytest.fixture
async def sandbox() -> AsyncIterator[Sandbox]:
    async with Sandbox(seed=42) as running:
        yield running


def sandbox_settings(sandbox: Sandbox, tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "entra_tenant_id": sandbox.tenant_id,
        "entra_authority_host": sandbox.authority_host,
        "entra_client_id": sandbox.client_id,
        "retail_server_url": sandbox.retail_server_url,
        "operating_unit_numbers": "128",
        "extra_ca_bundle": sandbox.ca_path,
        "sqlite_path": tmp_path / "state.sqlite3",
        "http_backoff_base_seconds": 0.01,
        "http_backoff_max_seconds": 0.05,
        "http_timeout_seconds": 5,
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def settings(sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("ENTRA_CLIENT_SECRET", sandbox.client_secret)
    return sandbox_settings(sandbox, tmp_path)


@pytest.fixture
async def runtime(settings: Settings) -> AsyncIterator[Runtime]:
    """The process runtime the registered functions use, pointed at the sandbox."""
    created = Runtime.create(settings)
    set_runtime(created)
    try:
        yield created
    finally:
        set_runtime(None)
        await created.close()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """The hostile-input cases this run tried, per function (the figures docs/RELIABILITY.md quotes)."""
    from tests.hostile import TRIED

    if TRIED:
        tried = ", ".join(f"{name} {count}" for name, count in sorted(TRIED.items()))
        terminalreporter.write_line(f"hostile input cases tried: {tried}")
