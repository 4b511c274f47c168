"""The app settings the Bicep gives the function app and the settings the code reads stay in step.

The contract is ``shared.settings.Settings``: a field's name upper-cased is its app setting. The
rules, read from the class itself so they grow with it:

- every field but the local-only ones is provided by the Bicep, and every one but the few fixed by
  design (``FIXED_BY_DESIGN``) comes from a main.bicep parameter, so an operator can change any
  setting the code reads with ``azd env set`` (a setting added in the portal is gone after the next
  ``azd provision``);
- whatever the Bicep provides is a field of Settings or one of the host/platform settings below;
- local-only fields are never provided;
- a ``%NAME%`` the Functions host resolves in a binding is provided (a code default cannot help the
  host), and every binding ``connection`` has its identity-based settings;
- a provided value that is a fixed name (queue, database, container) or a default equals the
  code's default (an empty value stands for the code's "unset"), except the few Azure needs
  otherwise (``AZURE_VALUES``), and the queues, database and containers the code names are declared;
- every main.bicep parameter can be set from the azd environment; one that feeds an app setting is
  read from the azd variable of the setting's own name, with main.bicep's default as its default.

Whether the provided values also *validate* in Settings is tests/infra/test_deployed_settings.py.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic_core import PydanticUndefined

from shared.settings import Settings
from tests.infra.bicep import (
    INFRA,
    Opaque,
    ParamRef,
    Template,
    api_arguments,
    app_setting_names,
    main,
    main_parameters_of_settings,
    settings_fed_by_one_parameter,
    through_module,
)

# Read by the Functions host, the platform or azure-identity, never by shared/settings.py.
PLATFORM_SETTINGS = {
    # Identity-based host storage (webjobs-sdk-how-to: "Connecting to host storage with an identity").
    "AzureWebJobsStorage__blobServiceUri",
    "AzureWebJobsStorage__queueServiceUri",
    "AzureWebJobsStorage__credential",
    "AzureWebJobsStorage__clientId",
    # Application Insights with local auth off: the host signs in with the identity.
    "APPLICATIONINSIGHTS_CONNECTION_STRING",
    "APPLICATIONINSIGHTS_AUTHENTICATION_STRING",
    # The Python worker: it makes the host's invocation span current (shared/telemetry.py).
    "PYTHON_ENABLE_OPENTELEMETRY",
}

# Meaningful on a developer's machine only; in Azure they would point at nothing.
LOCAL_ONLY = {"EXTRA_CA_BUNDLE", "SQLITE_PATH"}

# Provided, but no operator's choice: what Azure needs, resource outputs and the names of the
# resources the Bicep declares for them. Every other setting the code reads has its parameter.
FIXED_BY_DESIGN = {
    "STATE_STORE",
    "PREVIEW_DIR",
    "KEY_VAULT_URL",
    "COSMOS_ENDPOINT",
    "COSMOS_DATABASE",
    "COSMOS_LEDGER_CONTAINER",
    "COSMOS_STATE_CONTAINER",
    # The host binds the queue by this name; the storage account declares it and its poison queue.
    "DETECTION_QUEUE_NAME",
    # The user-assigned identity the Bicep creates: DefaultAzureCredential picks it by this, and
    # ENTRA_CREDENTIAL=federated presents its token.
    "AZURE_CLIENT_ID",
}

# Provided (with the parameter defaults) with a value other than the code default, on purpose.
AZURE_VALUES = {
    # The embedded SQLite file would live on one instance's disk.
    "STATE_STORE": "cosmos",
    # The package is mounted read-only on Flex Consumption; /tmp is the writable scratch disk.
    "PREVIEW_DIR": "/tmp/previews",  # noqa: S108 - the app's own scratch directory, by design
    # A first deployment sends nothing until the operator turns the dry run off.
    "DRY_RUN": "true",
    # No client secret in Azure: the identity is the app registration's federated credential.
    # Locally (the code's default) there is no managed identity, so a secret it is.
    "ENTRA_CREDENTIAL": "federated",
}

# In AZURE_VALUES, yet the operator's choice (a parameter of their own).
OPERATOR_CHOICES = {"DRY_RUN", "ENTRA_CREDENTIAL"}

_SUBSTITUTION = re.compile(r"%([A-Za-z0-9_]+)%")
_AZD_DEFAULT = re.compile(r"^\$\{([A-Z0-9_]+)(?:=(.*))?\}$")


def _fields() -> dict[str, Any]:
    return {name.upper(): field for name, field in Settings.model_fields.items()}


def _default(setting: str) -> Any:
    field = _fields()[setting]
    if field.default_factory is not None:
        return field.get_default(call_default_factory=True, validated_data={})
    return None if field.default is PydanticUndefined else field.default


def _as_setting_text(value: Any) -> str:
    """A code default as an app setting writes it; an empty setting is the code's "unset"."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, list) and any(isinstance(item, dict) for item in value):
        # A structured setting (IMAGE_VIEWPORTS) is JSON, written compactly.
        return json.dumps(value, separators=(",", ":"))
    if isinstance(value, list):
        return ",".join(str(item) for item in value)
    return str(value)


@pytest.fixture(scope="module")
def provided() -> dict[str, Any]:
    """Every app setting the Bicep may provide (whichever branch), valued with main.bicep's defaults.

    A value is text, or ``ParamRef`` for a main.bicep parameter without a default (the operator
    supplies it), or ``Opaque`` for what only the deployment knows (an endpoint, a client id).
    """
    api, _ = main().module("api")
    arguments = api_arguments()
    return {name: api.evaluate(value, arguments) for name, value in app_setting_names().items()}


def _binding_values() -> Iterator[tuple[str, str, Any]]:
    import function_app

    app = function_app.app
    # get_functions() remembers names and refuses a second call; reset around ours.
    app.functions_bindings = None
    try:
        functions = app.get_functions()
    finally:
        app.functions_bindings = None
    for function in functions:
        for binding in json.loads(function.get_function_json())["bindings"]:
            for key, value in binding.items():
                yield binding["type"], key, value


def test_settings_are_only_set_in_one_place() -> None:
    for path in INFRA.rglob("*.bicep"):
        template = Template(path)
        configs = template.resources_of_type("Microsoft.Web/sites/config").values()
        # authsettingsV2 (App Service authentication) is the one config document besides the site.
        assert [config["name"] for config in configs] in ([], ["authsettingsV2"]), (
            f"{path.name}: keep app settings in the site's siteConfig.appSettings"
        )


def test_local_only_and_platform_lists_are_current() -> None:
    assert set(_fields()) >= LOCAL_ONLY | FIXED_BY_DESIGN
    assert not PLATFORM_SETTINGS & set(_fields())
    assert not LOCAL_ONLY & FIXED_BY_DESIGN
    assert set(AZURE_VALUES) - OPERATOR_CHOICES <= FIXED_BY_DESIGN, "the operator may change these"


def test_every_setting_the_code_reads_is_provided(provided: dict[str, Any]) -> None:
    """A setting left to its code default could only be changed in the portal, until the next provision."""
    assert sorted(set(_fields()) - LOCAL_ONLY - set(provided)) == []


def test_every_setting_but_the_fixed_ones_is_set_from_its_own_azd_variable() -> None:
    wired = _parameters_file()
    sources = main_parameters_of_settings()
    for setting in sorted(set(_fields()) - LOCAL_ONLY - FIXED_BY_DESIGN):
        parameters = sources.get(setting, set())
        assert len(parameters) == 1, f"{setting} should come from one main.bicep parameter, not {parameters}"
        (parameter,) = parameters
        assert wired[parameter][0] == setting, f"{parameter} feeds {setting}"


def test_the_fixed_settings_are_no_parameters_choice() -> None:
    sources = main_parameters_of_settings()
    for setting in sorted(FIXED_BY_DESIGN):
        assert sources[setting] == set(), f"{setting} comes from {sources[setting]}; it is not fixed"


def test_every_required_setting_is_provided(provided: dict[str, Any]) -> None:
    required = {name for name, field in _fields().items() if field.is_required()}
    assert required, "Settings has no required field; the test would prove nothing"
    assert sorted(required - set(provided)) == []


def test_nothing_is_provided_that_the_code_does_not_read(provided: dict[str, Any]) -> None:
    unknown = set(provided) - set(_fields()) - PLATFORM_SETTINGS
    assert sorted(unknown) == []


def test_local_only_settings_are_never_provided(provided: dict[str, Any]) -> None:
    assert sorted(LOCAL_ONLY & set(provided)) == []


def test_azure_needs_cosmos_key_vault_and_the_identity(provided: dict[str, Any]) -> None:
    for setting, value in AZURE_VALUES.items():
        assert provided.get(setting) == value
    assert isinstance(provided["COSMOS_ENDPOINT"], Opaque)
    assert isinstance(provided["KEY_VAULT_URL"], Opaque)
    assert provided["AzureWebJobsStorage__credential"] == "managedidentity"
    # One identity for everything: the host, telemetry and the SDK clients use the same client id.
    client_id = provided["AZURE_CLIENT_ID"]
    assert isinstance(client_id, Opaque)
    assert provided["AzureWebJobsStorage__clientId"] == client_id
    authentication = provided["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"]
    assert isinstance(authentication, Opaque)
    assert authentication.expression == "ClientId=${identity.properties.clientId};Authorization=AAD"
    assert "clientId" in client_id.expression


def test_fixed_values_equal_the_code_defaults(provided: dict[str, Any]) -> None:
    """A literal reaching the app (a name in main.bicep, a parameter default) is the code's default."""
    checked = 0
    for setting, value in provided.items():
        if setting not in _fields() or setting in AZURE_VALUES:
            continue
        if isinstance(value, ParamRef | Opaque):
            continue
        assert value == _as_setting_text(_default(setting)), setting
        checked += 1
    assert checked >= 60, "expected names and defaults to be compared"


def test_binding_substitutions_are_provided(provided: dict[str, Any]) -> None:
    referenced = {
        name
        for _, _, value in _binding_values()
        if isinstance(value, str)
        for name in _SUBSTITUTION.findall(value)
    }
    assert referenced, "no %SETTING% in any binding; the test would prove nothing"
    assert sorted(referenced - set(provided)) == []


def test_binding_connections_are_identity_based(provided: dict[str, Any]) -> None:
    connections = {(kind, value) for kind, key, value in _binding_values() if key == "connection"}
    for kind, connection in connections:
        assert f"{connection}__credential" in provided
        assert f"{connection}__clientId" in provided
        if kind.startswith("queue"):
            assert f"{connection}__queueServiceUri" in provided
        assert connection not in provided, f"{connection} would be a connection string"


def _declared_queues() -> set[str]:
    queues = through_module(main(), "storage", "queueNames")
    assert isinstance(queues, list)
    return set(queues)


def test_queues_the_code_names_are_declared_with_their_poison_queues() -> None:
    names = {_default(name) for name in _fields() if name.endswith("_QUEUE_NAME")}
    assert names, "Settings names no queue"
    expected = names | {f"{name}-poison" for name in names}
    assert _declared_queues() == expected


def test_queue_bindings_use_declared_queues(provided: dict[str, Any]) -> None:
    for _, key, value in _binding_values():
        if key != "queueName":
            continue
        name = _SUBSTITUTION.sub(lambda m: str(provided[m.group(1)]), value)
        assert name in _declared_queues()


def test_cosmos_database_and_containers_match_the_code() -> None:
    root = main()
    cosmos, _ = root.module("cosmos")
    assert through_module(root, "cosmos", "databaseName") == _default("COSMOS_DATABASE")
    expected = {
        _default(name) for name in _fields() if name.startswith("COSMOS_") and name.endswith("_CONTAINER")
    }
    assert len(expected) >= 2
    assert set(through_module(root, "cosmos", "containerNames")) == expected

    (container,) = cosmos.resources_of_type(
        "Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers"
    ).values()
    resource = container["properties"]["resource"]
    assert resource["partitionKey"]["paths"] == ["/pk"]
    assert cosmos.resolve(resource["defaultTtl"]) == -1
    assert "options" not in container["properties"], "serverless containers take no throughput"


def _parameters_file() -> dict[str, tuple[str, str | None]]:
    """main.parameters.json: parameter -> (azd variable, its default or None)."""
    parameters = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    wired: dict[str, tuple[str, str | None]] = {}
    for name, entry in parameters.items():
        match = _AZD_DEFAULT.match(entry["value"])
        assert match, f"{name}: expected an azd ${{ENV}} substitution"
        # azd's envsubst ends a ${VAR=default} at the first }: a default cannot hold one.
        assert "}" not in (match.group(2) or ""), f"{name}: azd would cut the default at its first }}"
        wired[name] = (match.group(1), match.group(2))
    return wired


def test_parameters_file_matches_main() -> None:
    wired = _parameters_file()
    declared = main().parameters
    assert set(wired) <= set(declared), "a parameter main.bicep does not declare fails the deployment"
    assert sorted(set(declared) - set(wired)) == [], "every parameter can be set from the azd environment"
    for env, default in wired.values():
        if env in AZURE_VALUES:
            assert default == AZURE_VALUES[env], env
        elif env in _fields() and default is not None:
            assert default == _as_setting_text(_default(env)), env


def test_parameters_file_defaults_equal_main_defaults() -> None:
    """azd substitutes an unset variable without a default as "", which overrides main's default."""
    declared = main().parameters
    for name, (env, default) in _parameters_file().items():
        bicep_default = declared[name].get("default")
        if bicep_default is None:
            assert default is None, f"{name} has no default in main.bicep, so {env} should have none"
        elif isinstance(bicep_default, bool | int | str):
            assert (default or "") == _as_setting_text(bicep_default), f"{env} vs {name}"


def test_a_setting_from_one_parameter_is_read_from_its_own_azd_variable() -> None:
    """An operator sets SITE_URL with `azd env set SITE_URL ...`: the names are the same."""
    wired = _parameters_file()
    fed = {
        setting: param for setting, param in settings_fed_by_one_parameter().items() if setting in _fields()
    }
    assert len(fed) >= 60
    for setting, parameter in fed.items():
        assert wired[parameter][0] == setting, f"{parameter} feeds {setting}"
