"""Integration fixtures: the Azurite queue service, started once per session (see tests/azurite.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.azurite import AzuriteError, missing_azurite_message, start_azurite_queue


@pytest.fixture(scope="session")
def azurite_connection_string(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A storage connection string for a real, in-memory Azurite queue service on a free port.

    Fails (never skips) when Azurite is not installed: `make test` installs it with `npm ci`."""
    problem = missing_azurite_message()
    if problem is not None:
        pytest.fail(problem, pytrace=False)
    try:
        azurite = start_azurite_queue(tmp_path_factory.mktemp("azurite"))
    except AzuriteError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield azurite.connection_string
    finally:
        azurite.stop()
