"""The app settings the Bicep gives the function app validate in ``shared.settings.Settings``.

The app reads its settings once at start and refuses to run on an invalid one, so a Bicep default
the validators reject (an empty string where a number is expected, a bound the code does not allow)
would deploy cleanly and then fail every invocation. These tests evaluate the Bicep (main.bicep's
parameters, passed through app/api.bicep) with the values an operator would give and build
``Settings`` from exactly the app settings that come out.
"""

from __future__ import annotations

import json
import os
import re
import typing
from pathlib import Path
from typing import Any

import annotated_types
import pytest

from shared.settings import DEFAULT_IMAGE_VIEWPORTS, Settings
from tests.infra.bicep import INFRA, Opaque, ParamRef, app_settings, main, settings_fed_by_one_parameter

# The main.bicep parameters without a default: azd asks for them (docs: RETAIL_SERVER_URL, ...).
OPERATOR_VALUES = {
    "entraClientId": "c0ffee00-5a4d-4b0c-9e11-d365c0ec7001",
    "retailServerUrl": "https://contoso.commerce.dynamics.com",
    "operatingUnitNumbers": "128,067",
}
# Not app settings: azd fills them in itself.
AZD_VALUES = {"environmentName", "location"}
# Empty by default so the first `azd up` can run before the app registration exists;
# scripts.configure_dynamics creates it and sets the value (docs/reference/settings.md, Entra credential).
SET_BY_THE_SCRIPT = {"entraClientId"}

# Values only the deployment knows, as Azure fills them in.
AT_DEPLOYMENT = {
    "KEY_VAULT_URL": "https://kv-abc123.vault.azure.net/",
    "COSMOS_ENDPOINT": "https://cosmos-abc123.documents.azure.com:443/",
    "ENTRA_TENANT_ID": "5f3a8c1e-2b7d-4e9a-8c61-0d4b7e2f9a13",
    "AZURE_CLIENT_ID": "3f1d2c4b-7a8e-4c9d-9b1a-51d365c0ffee",
}

# Not optional in the code, yet their parameter defaults to empty: the Bicep then writes the code's
# default itself (a JSON list cannot be an azd ${VAR=default}, whose default ends at the first }).
EMPTY_MEANS_CODE_DEFAULT = {"IMAGE_VIEWPORTS"}
# Azure gives these other values than the code on purpose (tests/infra/test_settings_drift.py).
AZURE_DIFFERS = {
    "STATE_STORE",
    "COSMOS_ENDPOINT",
    "PREVIEW_DIR",
    "DRY_RUN",
    "KEY_VAULT_URL",
    "ENTRA_CREDENTIAL",
    "AZURE_CLIENT_ID",
}


@pytest.fixture(autouse=True)
def no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings reads the environment too; only what the Bicep provides may count here."""
    fields = set(Settings.model_fields)
    for name in list(os.environ):
        if name.lower() in fields:
            monkeypatch.delenv(name)


def _field_values(**arguments: Any) -> dict[str, Any]:
    provided = app_settings({**OPERATOR_VALUES, **arguments})
    values: dict[str, Any] = {}
    for name, value in provided.items():
        if name.lower() not in Settings.model_fields:
            continue
        if isinstance(value, Opaque | ParamRef):
            assert name in AT_DEPLOYMENT, f"{name} is known only at deployment; add a sample value"
            value = AT_DEPLOYMENT[name]
        assert isinstance(value, str), f"{name}: an app setting is text, got {value!r}"
        values[name.lower()] = value
    return values


def deployed(**arguments: Any) -> Settings:
    """Settings as the deployed app reads them, for these main.bicep parameters (else defaults)."""
    return Settings(**_field_values(**arguments))


def _main_params_reaching_the_app() -> dict[str, dict[str, Any]]:
    root = main()
    return {name: param for name, param in root.parameters.items() if name in root.module("api")[1]}


def _decorators(param: dict[str, Any]) -> dict[str, Any]:
    return {decorator["type"]: decorator.get("argument") for decorator in param.get("decorators", [])}


def _single_parameter_settings() -> dict[str, str]:
    """main.bicep parameter -> the one app setting it feeds alone."""
    return {param: setting for setting, param in settings_fed_by_one_parameter().items()}


def test_operator_values_are_exactly_the_parameters_without_default() -> None:
    without_default = {
        name for name, param in main().parameters.items() if param.get("default") is None
    } - AZD_VALUES
    assert without_default == set(OPERATOR_VALUES) - SET_BY_THE_SCRIPT


def test_before_the_script_ran_the_app_refuses_to_start_naming_entra_client_id() -> None:
    """The window between the first `azd up` and the script: a clear error, not a wrong call."""
    provided = app_settings({**OPERATOR_VALUES, "entraClientId": ""})
    assert provided["ENTRA_CLIENT_ID"] == ""
    with pytest.raises(ValueError, match="entra_client_id"):
        deployed(entraClientId="")


def test_only_endpoints_and_ids_wait_for_the_deployment() -> None:
    provided = app_settings(OPERATOR_VALUES)
    opaque = {
        name
        for name, value in provided.items()
        if name.lower() in Settings.model_fields and isinstance(value, Opaque | ParamRef)
    }
    assert opaque == set(AT_DEPLOYMENT)


def test_the_defaults_deploy_an_app_that_starts_and_sends_nothing() -> None:
    settings = deployed()
    assert settings.state_store == "cosmos"
    assert settings.dry_run is True
    assert settings.effective_email_provider == "preview"
    # Flex Consumption runs from a read-only package; /tmp is the instance's writable disk.
    assert settings.preview_dir == Path("/tmp/previews")  # noqa: S108 - compared, not written
    assert settings.preview_dir.is_absolute()
    # Empty parameters mean "not set" to the code, not an empty URL.
    for field in (
        "site_url",
        "return_to_cart_url_template",
        "unsubscribe_url_template",
        "image_base_url",
        "emarsys_event_id",
        "sendgrid_template_id",
        "sendgrid_from_email",
        "sendgrid_from_name",
        "sendgrid_unsubscribe_group_id",
        "webhook_url",
        "fno_url",
        "fno_client_id",
        "cpos_url",
    ):
        assert getattr(settings, field) is None, field
    assert settings.emarsys_api_url == "https://api.emarsys.net"
    assert settings.reminder_steps == [60]
    assert settings.operating_unit_numbers == ["128", "067"]


def test_an_empty_emarsys_event_id_is_left_out_rather_than_set_empty() -> None:
    assert "EMARSYS_EVENT_ID" not in app_settings(OPERATOR_VALUES)
    assert app_settings({**OPERATOR_VALUES, "emarsysEventId": "4711"})["EMARSYS_EVENT_ID"] == "4711"


def test_an_empty_sendgrid_unsubscribe_group_is_left_out_rather_than_set_empty() -> None:
    assert "SENDGRID_UNSUBSCRIBE_GROUP_ID" not in app_settings(OPERATOR_VALUES)
    provided = app_settings({**OPERATOR_VALUES, "sendgridUnsubscribeGroupId": "42"})
    assert provided["SENDGRID_UNSUBSCRIBE_GROUP_ID"] == "42"
    assert deployed(sendgridUnsubscribeGroupId="42").sendgrid_unsubscribe_group_id == 42


def _code_defaults() -> Settings:
    """Settings with only the required values, each what the deployment gives it."""
    required = _field_values()
    return Settings(
        **{name: required[name] for name, field in Settings.model_fields.items() if field.is_required()}
    )


def test_the_default_parameters_give_the_codes_defaults() -> None:
    """A deployment nobody tuned behaves as the code's defaults say, except where Azure needs otherwise."""
    settings, defaults = deployed(), _code_defaults()
    compared = 0
    for name in Settings.model_fields:
        if name.upper() in AZURE_DIFFERS:
            continue
        assert getattr(settings, name) == getattr(defaults, name), name.upper()
        compared += 1
    assert compared >= 60


@pytest.mark.parametrize("setting", sorted(EMPTY_MEANS_CODE_DEFAULT))
def test_an_empty_structured_parameter_writes_the_codes_default(setting: str) -> None:
    (parameter,) = (p for p, s in _single_parameter_settings().items() if s == setting)
    assert main().parameters[parameter].get("default") == ""
    written = json.loads(app_settings({**OPERATOR_VALUES, parameter: ""})[setting])
    field = Settings.model_fields[setting.lower()]
    assert written == field.get_default(call_default_factory=True, validated_data={})


# azd fills main.parameters.json in as text (drone/envsubst: a default ends at the first }), then
# reads it as JSON; a value is not escaped on the way.
_AZD_REFERENCE = re.compile(r"\$\{([A-Za-z0-9_]+)(?:=([^}]*))?\}")


def _as_azd_passes_them(environment: dict[str, str]) -> dict[str, Any]:
    text = (INFRA / "main.parameters.json").read_text()
    filled = _AZD_REFERENCE.sub(
        lambda match: environment.get(match.group(1), match.group(2) or ""),
        text,
    )
    return {name: entry["value"] for name, entry in json.loads(filled)["parameters"].items()}


def test_image_viewports_from_the_azd_environment() -> None:
    """`azd env set IMAGE_VIEWPORTS` takes the JSON with its quotes escaped, as docs/reference/settings.md says."""
    assert _as_azd_passes_them({})["imageViewports"] == ""
    escaped = r"[{\"media\":\"(min-width:0px)\",\"width\":315,\"height\":315,\"default\":true}]"
    value = _as_azd_passes_them({"IMAGE_VIEWPORTS": escaped})["imageViewports"]
    assert deployed(imageViewports=value).image_viewports == [
        {"media": "(min-width:0px)", "width": 315, "height": 315, "default": True}
    ]
    with pytest.raises(json.JSONDecodeError):
        _as_azd_passes_them({"IMAGE_VIEWPORTS": escaped.replace("\\", "")})


def test_image_viewports_reach_settings_as_json() -> None:
    assert deployed().image_viewports == [dict(viewport) for viewport in DEFAULT_IMAGE_VIEWPORTS]
    viewports = [
        {"media": "(max-width:600px)", "width": 120, "height": 120, "default": False},
        {"media": "(min-width:601px)", "width": 400, "height": 300, "default": True},
    ]
    text = json.dumps(viewports)
    assert app_settings({**OPERATOR_VALUES, "imageViewports": text})["IMAGE_VIEWPORTS"] == text
    assert deployed(imageViewports=text).image_viewports == viewports
    with pytest.raises(ValueError, match="image_viewports"):
        deployed(imageViewports="80x80")


def _choices() -> list[tuple[str, Any]]:
    """Every value of every @allowed or bool parameter that reaches the app."""
    choices: list[tuple[str, Any]] = []
    for name, param in _main_params_reaching_the_app().items():
        allowed = _decorators(param).get("allowed")
        if allowed is not None:
            choices += [(name, value) for value in allowed]
        elif param["type"] == "bool":
            choices += [(name, True), (name, False)]
    return choices


@pytest.mark.parametrize(("parameter", "value"), _choices(), ids=lambda v: str(v))
def test_every_allowed_choice_validates(parameter: str, value: Any) -> None:
    settings = deployed(**{parameter: value})
    setting = _single_parameter_settings().get(parameter)
    if setting is not None:
        assert getattr(settings, setting.lower()) == value


def test_choices_cover_the_new_parameters() -> None:
    names = {name for name, _ in _choices()}
    assert {"emailProvider", "dryRun", "consentPolicy", "emarsysAuth", "easyAuthEnabled"} <= names


_VALUE_BOUNDS: dict[type[Any], tuple[str, str]] = {
    annotated_types.Ge: ("low", "ge"),
    annotated_types.Le: ("high", "le"),
}
_LENGTH_BOUNDS: dict[type[Any], tuple[str, str]] = {
    annotated_types.MinLen: ("low", "min_length"),
    annotated_types.MaxLen: ("high", "max_length"),
}


def _bounds(setting: str, kinds: dict[type[Any], tuple[str, str]]) -> tuple[Any, Any]:
    found: dict[str, Any] = {"low": None, "high": None}
    for item in Settings.model_fields[setting.lower()].metadata:
        for kind, (end, attribute) in kinds.items():
            if isinstance(item, kind):
                found[end] = getattr(item, attribute)
    return found["low"], found["high"]


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def test_decimal_parameters_state_the_codes_bounds() -> None:
    """Bicep has no decimal type: a float setting is a string parameter whose description gives its range."""
    params = _main_params_reaching_the_app()
    checked = 0
    for parameter, setting in _single_parameter_settings().items():
        field = Settings.model_fields[setting.lower()]
        if field.annotation is not float:
            continue
        assert params[parameter]["type"] == "string", parameter
        description = _decorators(params[parameter])["description"]
        words = []
        for item in field.metadata:
            if isinstance(item, annotated_types.Gt):
                words.append(f"more than {_number(item.gt)}")
            elif isinstance(item, annotated_types.Ge):
                words.append(f"at least {_number(item.ge)}")
            elif isinstance(item, annotated_types.Le):
                words.append(f"at most {_number(item.le)}")
        assert len(words) == 2, setting
        for phrase in words:
            assert phrase in description, f"{parameter}: say '{phrase}'"
        # The stated upper bound is the enforced one.
        high = next(item.le for item in field.metadata if isinstance(item, annotated_types.Le))
        assert getattr(deployed(**{parameter: _number(high)}), setting.lower()) == high
        with pytest.raises(ValueError, match=setting.lower()):
            deployed(**{parameter: _number(high + 1)})
        checked += 1
    assert checked >= 6


def test_parameter_constraints_are_the_codes() -> None:
    """@allowed, @minValue/@maxValue and @minLength/@maxLength say what Settings says."""
    params = _main_params_reaching_the_app()
    checked = 0
    for parameter, setting in _single_parameter_settings().items():
        field = Settings.model_fields[setting.lower()]
        decorators = _decorators(params[parameter])
        if "allowed" in decorators:
            assert typing.get_origin(field.annotation) is typing.Literal, setting
            assert set(decorators["allowed"]) == set(typing.get_args(field.annotation)), setting
        elif params[parameter]["type"] == "int":
            low, high = _bounds(setting, _VALUE_BOUNDS)
            assert (decorators.get("min_value"), decorators.get("max_value")) == (low, high), setting
        elif parameter in SET_BY_THE_SCRIPT:
            # Empty on purpose until the script sets it (test_before_the_script_ran_...).
            assert params[parameter]["default"] == "", parameter
        elif params[parameter]["type"] == "string":
            low, high = _bounds(setting, _LENGTH_BOUNDS)
            if low is not None or high is not None:
                assert decorators.get("min_length") == low, setting
                assert decorators.get("max_length") == high, setting
            if (
                type(None) not in typing.get_args(field.annotation)
                and setting not in EMPTY_MEANS_CODE_DEFAULT
            ):
                # Not optional in the code, so an empty value would not mean "unset": refuse it.
                assert (decorators.get("min_length") or 0) >= 1, f"{parameter} may be empty"
        checked += 1
    assert checked >= 30


@pytest.mark.parametrize(
    "arguments",
    [
        {"emailProvider": "emarsys", "emarsysEventId": "4711"},
        {"emailProvider": "emarsys", "emarsysEventId": "4711", "emarsysAuth": "wsse", "emarsysKeyId": "12"},
        {
            "emailProvider": "sendgrid",
            "sendgridTemplateId": "d-0123456789abcdef",
            "sendgridFromEmail": "shop@contoso.com",
        },
        {"emailProvider": "webhook", "webhookUrl": "https://hooks.contoso.com/abandoned-cart"},
        {"emailProvider": "preview"},
    ],
    ids=["emarsys", "emarsys-wsse", "sendgrid", "webhook", "preview"],
)
def test_each_provider_validates_once_the_dry_run_is_off(arguments: dict[str, Any]) -> None:
    settings = deployed(dryRun=False, **arguments)
    assert settings.effective_email_provider == arguments["emailProvider"]


@pytest.mark.parametrize("provider", ["emarsys", "sendgrid", "webhook"])
def test_a_provider_without_its_settings_stops_the_app_only_once_the_dry_run_is_off(provider: str) -> None:
    assert deployed(emailProvider=provider).effective_email_provider == "preview"
    with pytest.raises(ValueError, match=provider):
        deployed(emailProvider=provider, dryRun=False)


def test_real_values_reach_their_settings() -> None:
    arguments = {
        "siteUrl": "https://shop.contoso.com",
        "returnToCartUrlTemplate": "https://shop.contoso.com/cart?cartId={cartId}&channel={channelId}",
        "unsubscribeUrlTemplate": "https://shop.contoso.com/unsubscribe?c={customerId}",
        "imageBaseUrl": "https://images.contoso.com/cms/imageFileData/search?fileName=/",
        "fnoUrl": "https://contoso.operations.dynamics.com",
        "fnoClientId": "0a1b2c3d-0000-4000-8000-000000000001",
        "cposUrl": "https://contoso.commerce.dynamics.com",
        "reminderSteps": "60,1440",
        "frequencyCapHours": 0,
        "lookbackMinutes": 2880,
        "abandonedAfterMinutes": 120,
        "maxCartsPerRun": 500,
        "customersAppRole": "Pos.Customers.Create",
        "sendgridFromName": "Contoso",
        "entraAuthorityHost": "https://login.microsoftonline.us",
        "retailServerApiVersion": "7.4",
        "httpTimeoutSeconds": "12.5",
        "httpBackoffBaseSeconds": "0.25",
        "httpMaxAttempts": 6,
        "secretCacheTtlSeconds": 0,
        "cartPageSize": 150,
        "maxResponseBytes": 16777216,
        "coalesceWindowMs": 0,
        "emarsysAuthUrl": "https://auth.emarsys.example",
        "sendgridApiUrl": "https://api.eu.sendgrid.com",
        "sendgridApiKeySecretName": "sendgrid-eu-api-key",
        "fnoCreateCustomerPath": "/api/services/ContosoCustomerServices/CustomerService/Create",
        "fnoCustomersEntity": "CustomersV2",
        "fnoClientSecretName": "fno-partner-secret",
        "fnoTimeoutSeconds": "20",
        "fnoMaxAttempts": 3,
        "fnoMaxRetryWaitSeconds": "2.5",
        "idempotencyTtlHours": 48,
        "customerMaxBodyBytes": 65536,
    }
    settings = deployed(**arguments)
    assert settings.site_url == "https://shop.contoso.com"
    assert settings.return_to_cart_url_template == arguments["returnToCartUrlTemplate"]
    assert settings.unsubscribe_url_template == arguments["unsubscribeUrlTemplate"]
    assert settings.image_base_url == arguments["imageBaseUrl"]
    assert settings.fno_url == "https://contoso.operations.dynamics.com"
    assert settings.fno_client_id == arguments["fnoClientId"]
    assert settings.cpos_url == "https://contoso.commerce.dynamics.com"
    assert settings.reminder_steps == [60, 1440]
    assert settings.frequency_cap_hours == 0
    assert (settings.lookback_minutes, settings.abandoned_after_minutes) == (2880, 120)
    assert settings.max_carts_per_run == 500
    assert settings.customers_app_role == "Pos.Customers.Create"
    assert settings.sendgrid_from_name == "Contoso"
    assert settings.authority == "https://login.microsoftonline.us/" + AT_DEPLOYMENT["ENTRA_TENANT_ID"]
    assert settings.retail_server_api_version == "7.4"
    assert (settings.http_timeout_seconds, settings.http_backoff_base_seconds) == (12.5, 0.25)
    assert (settings.http_max_attempts, settings.secret_cache_ttl_seconds) == (6, 0)
    assert (settings.cart_page_size, settings.coalesce_window_ms) == (150, 0)
    assert settings.max_response_bytes == 16 * 1024 * 1024
    assert settings.emarsys_auth_url == "https://auth.emarsys.example"
    assert settings.sendgrid_api_url == "https://api.eu.sendgrid.com"
    assert settings.sendgrid_api_key_secret_name == "sendgrid-eu-api-key"
    assert settings.fno_create_customer_path == arguments["fnoCreateCustomerPath"]
    assert settings.fno_customers_entity == "CustomersV2"
    assert settings.fno_client_secret_name == "fno-partner-secret"
    assert (settings.fno_timeout_seconds, settings.fno_max_attempts) == (20.0, 3)
    assert settings.fno_max_retry_wait_seconds == 2.5
    assert (settings.idempotency_ttl_hours, settings.customer_max_body_bytes) == (48, 65536)


def test_booleans_are_written_in_lower_case() -> None:
    """ARM's string(true) is 'True'; the settings are written as 'true'/'false' like the sample."""
    provided = app_settings({**OPERATOR_VALUES, "dryRun": False, "orderCheck": True})
    assert (provided["DRY_RUN"], provided["ORDER_CHECK"]) == ("false", "true")
    bool_settings = {
        name
        for name in provided
        if name.lower() in Settings.model_fields and Settings.model_fields[name.lower()].annotation is bool
    }
    assert len(bool_settings) >= 5
    for name in bool_settings:
        assert provided[name] in ("true", "false"), name
