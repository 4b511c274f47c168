"""``local.settings.sample.json`` points the app at ``python -m sandbox`` as it starts by default,
so ``func start`` with a copy of the sample works against the sandbox without edits."""

from __future__ import annotations

import json
from pathlib import Path

from sandbox import __main__ as sandbox_main
from sandbox import emarsys, fno
from sandbox.server import Sandbox
from shared.settings import Settings

SAMPLE = json.loads(Path("local.settings.sample.json").read_text())["Values"]
LOCAL_ROOT = f"https://127.0.0.1:{sandbox_main.DEFAULT_PORT}"


async def test_sample_matches_the_sandbox_it_names(sandbox: Sandbox) -> None:
    def local(value: str) -> str:
        return value.replace(sandbox.base_url, LOCAL_ROOT)

    expected = {key: local(value) for key, value in sandbox.env().items()}
    expected["EXTRA_CA_BUNDLE"] = str(sandbox_main.STABLE_CA_PATH)
    expected["FNO_URL"] = local(fno.fno_url(sandbox))
    expected["EMARSYS_API_URL"] = local(emarsys.api_url(sandbox))
    expected["EMARSYS_AUTH_URL"] = local(emarsys.auth_url(sandbox))
    assert {key: SAMPLE[key] for key in expected} == expected


def test_sample_is_valid_settings(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("placeholder")
    values = {key.lower(): value for key, value in SAMPLE.items() if key.lower() in Settings.model_fields}
    values["extra_ca_bundle"] = ca
    settings = Settings(**values)
    assert settings.effective_email_provider == "preview"
    assert settings.state_store == "sqlite"
