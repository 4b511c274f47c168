"""The privacy tests run against the shared sandbox runtime, with the signing secret in the
environment as a local run has it (UNSUBSCRIBE_SIGNING_SECRET)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sandbox.server import Sandbox
from shared.settings import Settings
from tests.conftest import sandbox_settings
from tests.privacy.helpers import SECRET


@pytest.fixture
def settings(sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("ENTRA_CLIENT_SECRET", sandbox.client_secret)
    monkeypatch.setenv("UNSUBSCRIBE_SIGNING_SECRET", SECRET)
    return sandbox_settings(sandbox, tmp_path, operating_unit_numbers="128,129")
