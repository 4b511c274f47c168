from __future__ import annotations

from pathlib import Path

import pytest

from shared.settings import Settings, SettingsError, load_settings

REQUIRED = {
    "ENTRA_TENANT_ID": "tenant",
    "ENTRA_CLIENT_ID": "client",
    "RETAIL_SERVER_URL": "https://contoso-rs.su.retail.dynamics.com/",
    "OPERATING_UNIT_NUMBERS": "128, 067",
}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [*REQUIRED, "DETECT_SCHEDULE", "STATE_STORE", "COSMOS_ENDPOINT", "EXTRA_CA_BUNDLE"]:
        monkeypatch.delenv(name, raising=False)


def set_env(monkeypatch: pytest.MonkeyPatch, **values: str) -> None:
    for name, value in {**REQUIRED, **values}.items():
        monkeypatch.setenv(name, value)


def test_valid_settings_are_parsed_and_normalised(monkeypatch: pytest.MonkeyPatch) -> None:
    set_env(monkeypatch)
    settings = load_settings()
    assert settings.operating_unit_numbers == ["128", "067"], "OUNs are strings; leading zeros are kept"
    assert settings.retail_server_url == "https://contoso-rs.su.retail.dynamics.com"
    assert settings.retail_server_audience == "https://commerce.dynamics.com"
    assert settings.authority == "https://login.microsoftonline.com/tenant"
    assert settings.state_store == "sqlite"


def test_missing_setting_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    set_env(monkeypatch)
    monkeypatch.delenv("RETAIL_SERVER_URL")
    with pytest.raises(SettingsError, match="RETAIL_SERVER_URL is required but not set"):
        load_settings()


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("DETECT_SCHEDULE", "*/15 * * * *", "DETECT_SCHEDULE .*six-field NCRONTAB"),
        ("RETAIL_SERVER_URL", "http://insecure.example", "RETAIL_SERVER_URL .*https"),
        ("OPERATING_UNIT_NUMBERS", "128,128", "must not repeat"),
        ("OPERATING_UNIT_NUMBERS", "", "OPERATING_UNIT_NUMBERS"),
        ("LOOKBACK_MINUTES", "30", "ABANDONED_AFTER_MINUTES must be smaller than LOOKBACK_MINUTES"),
        ("MAX_CARTS_PER_RUN", "0", "MAX_CARTS_PER_RUN"),
        ("STATE_STORE", "cosmos", "COSMOS_ENDPOINT is required"),
        ("STATE_STORE", "redis", "STATE_STORE"),
        ("DETECTION_QUEUE_NAME", "Abandoned_Carts", "DETECTION_QUEUE_NAME"),
        ("EXTRA_CA_BUNDLE", "/nonexistent/ca.pem", "EXTRA_CA_BUNDLE"),
    ],
)
def test_invalid_setting_is_named(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, message: str
) -> None:
    set_env(monkeypatch, **{name: value})
    with pytest.raises(SettingsError, match=message):
        load_settings()


def test_error_never_echoes_the_value(monkeypatch: pytest.MonkeyPatch) -> None:
    set_env(monkeypatch, COSMOS_ENDPOINT="AccountKey=supersecretvalue")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert "supersecretvalue" not in str(caught.value)


def test_sample_local_settings_cover_every_setting() -> None:
    import json

    sample = json.loads(Path("local.settings.sample.json").read_text())["Values"]
    missing = [name.upper() for name in Settings.model_fields if name.upper() not in sample]
    assert not missing, f"local.settings.sample.json lacks {missing}"


def test_empty_optional_numbers_are_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    set_env(monkeypatch, EMARSYS_EVENT_ID="", SENDGRID_UNSUBSCRIBE_GROUP_ID=" ")
    settings = load_settings()
    assert settings.emarsys_event_id is None and settings.sendgrid_unsubscribe_group_id is None


OPTIONAL = sorted(name for name, field in Settings.model_fields.items() if not field.is_required())
REQUIRED_FIELDS = sorted(name for name, field in Settings.model_fields.items() if field.is_required())


def test_the_required_settings_are_the_ones_this_module_sets() -> None:
    assert [name.upper() for name in REQUIRED_FIELDS] == sorted(REQUIRED)


@pytest.mark.parametrize("blank", ["", "  "])
@pytest.mark.parametrize("name", OPTIONAL)
def test_an_empty_optional_setting_is_unset(monkeypatch: pytest.MonkeyPatch, name: str, blank: str) -> None:
    """Every optional setting left empty (or blank) takes its default, whatever its type."""
    set_env(monkeypatch, **{name.upper(): blank})
    settings = load_settings()
    assert getattr(settings, name) == Settings.model_fields[name].get_default(call_default_factory=True)


@pytest.mark.parametrize("blank", ["", "  "])
@pytest.mark.parametrize("name", REQUIRED_FIELDS)
def test_an_empty_required_setting_fails_naming_it(
    monkeypatch: pytest.MonkeyPatch, name: str, blank: str
) -> None:
    set_env(monkeypatch, **{name.upper(): blank})
    with pytest.raises(SettingsError, match=f"{name.upper()} is required but not set"):
        load_settings()


def test_an_empty_extra_ca_bundle_is_no_bundle(monkeypatch: pytest.MonkeyPatch) -> None:
    # It used to be Path(""), the current folder: "EXTRA_CA_BUNDLE names ., which is not a file".
    set_env(monkeypatch, EXTRA_CA_BUNDLE="")
    assert load_settings().extra_ca_bundle is None


def test_optional_urls_may_be_empty(monkeypatch: pytest.MonkeyPatch) -> None:
    set_env(monkeypatch, KEY_VAULT_URL="", COSMOS_ENDPOINT="", WEBHOOK_URL="")
    settings = load_settings()
    assert settings.key_vault_url is None and settings.webhook_url is None


@pytest.mark.parametrize(
    "value",
    [
        "https://pos.contoso.example/cpos",
        "https://pos.contoso.example/cpos/",
        "https://pos.contoso.example/cpos/POS",
        "https://pos.contoso.example/cpos/pos/",
        "https://pos.contoso.example/cpos/Pos",
    ],
)
def test_cpos_url_loses_one_trailing_pos(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    from shared.store_commerce import cloud_pos_link

    set_env(monkeypatch, CPOS_URL=value)
    settings = load_settings()
    assert settings.cpos_url == "https://pos.contoso.example/cpos"
    link = cloud_pos_link(settings.cpos_url, "D365.RecallOrder", {"salesId": "SO-1"})
    assert link.startswith("https://pos.contoso.example/cpos/POS?actionName=")


def test_only_one_trailing_pos_is_removed_and_only_from_cpos_url(monkeypatch: pytest.MonkeyPatch) -> None:
    set_env(monkeypatch, CPOS_URL="https://pos.contoso.example/POS/POS", FNO_URL="https://fno.example/POS")
    settings = load_settings()
    assert settings.cpos_url == "https://pos.contoso.example/POS"
    assert settings.fno_url == "https://fno.example/POS"


def test_a_host_named_pos_is_not_a_trailing_pos(monkeypatch: pytest.MonkeyPatch) -> None:
    set_env(monkeypatch, CPOS_URL="https://pos/")
    assert load_settings().cpos_url == "https://pos"
    set_env(monkeypatch, CPOS_URL="https://contoso-pos.example/POS")
    assert load_settings().cpos_url == "https://contoso-pos.example"


def test_log_level_in_any_case(monkeypatch: pytest.MonkeyPatch) -> None:
    set_env(monkeypatch, LOG_LEVEL=" debug ")
    assert load_settings().log_level == "DEBUG"
