"""The properties that keep the deployment keyless and on the intended hosting plan."""

from __future__ import annotations

from typing import Any

from tests.infra.bicep import INFRA, Template, main


def _only(path: str, resource_type: str) -> tuple[Template, dict[str, Any]]:
    template = Template(INFRA / path)
    resources = template.resources_of_type(resource_type)
    assert len(resources) == 1, resource_type
    (body,) = resources.values()
    return template, body["properties"]


def test_storage_takes_entra_id_only() -> None:
    _, props = _only("core/storage/storage-account.bicep", "Microsoft.Storage/storageAccounts")
    assert props["allowSharedKeyAccess"] is False
    assert props["allowBlobPublicAccess"] is False
    assert props["minimumTlsVersion"] == "TLS1_2"
    assert props["supportsHttpsTrafficOnly"] is True


def test_cosmos_is_serverless_and_keyless() -> None:
    _, props = _only("core/database/cosmos-nosql.bicep", "Microsoft.DocumentDB/databaseAccounts")
    assert props["disableLocalAuth"] is True
    assert props["disableKeyBasedMetadataWriteAccess"] is True
    assert {"name": "EnableServerless"} in props["capabilities"]


def test_key_vault_uses_rbac_with_soft_delete_and_purge_protection() -> None:
    _, props = _only("core/security/key-vault.bicep", "Microsoft.KeyVault/vaults")
    assert props["enableRbacAuthorization"] is True
    assert props["enableSoftDelete"] is True
    assert props["enablePurgeProtection"] is True
    assert "accessPolicies" not in props


def test_no_secret_values_in_bicep() -> None:
    for path in INFRA.rglob("*.bicep"):
        template = Template(path)
        assert not template.resources_of_type("Microsoft.KeyVault/vaults/secrets"), path
        for name, param in template.parameters.items():
            decorators = {d["type"] for d in param.get("decorators", [])}
            assert "secure" not in decorators, (
                f"{path.name}:{name} takes a secret; put it in Key Vault instead"
            )


def test_application_insights_takes_entra_telemetry_only() -> None:
    _, props = _only("core/monitor/monitoring.bicep", "Microsoft.Insights/components")
    assert props["DisableLocalAuth"] is True
    assert props["WorkspaceResourceId"]


def test_function_app_runs_python_311_on_flex_consumption_with_its_identity() -> None:
    api, _ = main().module("api")
    (plan,) = api.resources_of_type("Microsoft.Web/serverfarms").values()
    assert plan["sku"] == {"name": "FC1", "tier": "FlexConsumption"}
    assert plan["properties"]["reserved"] is True

    (site,) = api.resources_of_type("Microsoft.Web/sites").values()
    assert site["kind"] == "functionapp,linux"
    assert site["identity"]["type"] == "UserAssigned"
    props = site["properties"]
    assert props["httpsOnly"] is True
    config = props["functionAppConfig"]
    assert config["runtime"] == {"name": "python", "version": "3.11"}
    storage = config["deployment"]["storage"]
    assert storage["type"] == "blobContainer"
    assert storage["authentication"]["type"] == "UserAssignedIdentity"
    scale = config["scaleAndConcurrency"]
    assert set(scale) == {"instanceMemoryMB", "maximumInstanceCount"}
    for value in scale.values():
        assert value in api.parameters, "sizing comes from parameters"


def test_basic_publishing_credentials_are_off() -> None:
    api, _ = main().module("api")
    policies = api.resources_of_type("Microsoft.Web/sites/basicPublishingCredentialsPolicies")
    assert {body["name"]: body["properties"]["allow"] for body in policies.values()} == {
        "ftp": False,
        "scm": False,
    }


def test_outputs_azd_and_the_operator_use() -> None:
    outputs = set(main().json["outputs"])
    assert {
        "AZURE_FUNCTION_APP_NAME",
        "AZURE_FUNCTION_APP_ENDPOINT",
        "AZURE_KEY_VAULT_NAME",
        "AZURE_RESOURCE_GROUP",
        "AZURE_COSMOS_ACCOUNT_NAME",
        "AZURE_STORAGE_ACCOUNT_NAME",
    } <= outputs


def test_app_service_authentication_lets_keyed_callers_through_and_skips_the_unsubscribe_link() -> None:
    template, props = _only("app/api.bicep", "Microsoft.Web/sites/config")
    condition = template.resources["authSettings"]["config"]["condition"]["operator"]
    # Deployed only when EASY_AUTH_ENABLED and the API's app registration (API_CLIENT_ID) are set.
    assert condition["type"] == "and" and condition["operands"]["operand_1"] == "easyAuthEnabled"
    assert "apiClientId" in str(condition["operands"]["operand_2"])
    assert template.resource_body("authSettings")["name"] == "authsettingsV2"
    validation = props["globalValidation"]
    # POS tills call with a function key only: the platform must not turn them away; the code
    # requires the app roles (erasure always).
    assert validation["requireAuthentication"] is False
    assert validation["unauthenticatedClientAction"] == "AllowAnonymous"
    assert validation["excludedPaths"] == ["/api/unsubscribe"]
    entra = props["identityProviders"]["azureActiveDirectory"]
    assert entra["enabled"] is True and entra["registration"]["clientId"] == "apiClientId"
    assert entra["registration"]["openIdIssuer"] == "${entraAuthorityHost}/${entraTenantId}/v2.0"
    assert entra["validation"]["allowedAudiences"][0] == "apiClientId"
    assert props["platform"]["enabled"] is True and props["login"]["tokenStore"]["enabled"] is False
