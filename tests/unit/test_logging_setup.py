"""LOG_LEVEL: a valid level applies to the app's loggers; an invalid one falls back to INFO with a
warning naming the setting, instead of failing the import of function_app."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.logging_setup import configure_logging


@pytest.fixture(autouse=True)
def keep_app_level() -> Iterator[None]:
    app = logging.getLogger("shared")
    level = app.level
    yield
    app.setLevel(level)


@pytest.mark.parametrize(("value", "level"), [("debug", logging.DEBUG), (" WARNING ", logging.WARNING)])
def test_a_valid_level_applies(monkeypatch: pytest.MonkeyPatch, value: str, level: int) -> None:
    monkeypatch.setenv("LOG_LEVEL", value)
    configure_logging()
    assert logging.getLogger("shared").level == level


@pytest.mark.parametrize("value", ["", "  "])
def test_unset_or_blank_is_info(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("LOG_LEVEL", value)
    configure_logging()
    assert logging.getLogger("shared").level == logging.INFO
    monkeypatch.delenv("LOG_LEVEL")
    configure_logging()
    assert logging.getLogger("shared").level == logging.INFO


@pytest.mark.parametrize("value", ["VERBOSE", "10", "NOTSET", "CRITICAL"])
def test_an_invalid_level_falls_back_to_info_with_a_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, value: str
) -> None:
    monkeypatch.setenv("LOG_LEVEL", value)
    with caplog.at_level(logging.WARNING):
        configure_logging()
    assert logging.getLogger("shared").level == logging.INFO
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    text = warnings[0].getMessage()
    assert "LOG_LEVEL" in text and repr(value) in text
    assert "DEBUG, INFO, WARNING, ERROR" in text and "INFO" in text


def test_function_app_imports_with_an_invalid_level() -> None:
    root = Path(__file__).resolve().parents[2]
    environment = {**os.environ, "LOG_LEVEL": "VERBOSE"}
    code = "import logging; logging.basicConfig(); import function_app"
    done = subprocess.run(  # noqa: S603 - fixed argv, no shell
        [sys.executable, "-c", code], cwd=root, env=environment, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "LOG_LEVEL" in done.stderr and "Unknown level" not in done.stderr
