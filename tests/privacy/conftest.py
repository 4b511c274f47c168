"""The privacy tests run against the shared sandbox runtime, with the signing secret in the
environment as a local run has it (UNSUBSCRIBE_SIGNING_SECRET), and API_CLIENT_ID set, so the
sandbox's Entra can issue the erasure role in bearer tokens the app accepts."""

from __future__ import annotations

from pathlib import Path

import pytest

from sandbox.server import Sandbox
from shared.settings import Settings
from tests.conftest import sandbox_settings
from tests.privacy.helpers import API_CLIENT_ID, SECRET


@pytest.fixture
def settings(sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("ENTRA_CLIENT_SECRET", sandbox.client_secret)
    monkeypatch.setenv("UNSUBSCRIBE_SIGNING_SECRET", SECRET)
    return sandbox_settings(
        sandbox,
        tmp_path,
        operating_unit_numbers="128,129",
        api_client_id=API_CLIENT_ID,
        preview_dir=tmp_path / "previews",
    )
