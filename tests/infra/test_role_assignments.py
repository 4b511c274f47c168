"""The role assignments are exactly the ones the code needs, at the scopes it needs them.

Every ``roleAssignments`` and Cosmos ``sqlRoleAssignments`` resource in infra/ is collected, so a
role added anywhere shows up here. Roles are compared by their GUIDs, not by the names in Bicep.
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple

import pytest

from tests.infra.bicep import INFRA, ParamRef, Template, bicep_files, main

OWNER = "8e3af657-a8ff-443c-a75c-2fe8c4bcb635"
CONTRIBUTOR = "b24988ac-6180-40ce-a61d-cc14e2d0d09a"

STORAGE_BLOB_DATA_OWNER = "b7e6dc6d-f1e8-4753-8033-0f276bb0955b"
STORAGE_QUEUE_DATA_CONTRIBUTOR = "974c5e8b-45b9-4653-ba55-5f855dd0fb88"
KEY_VAULT_SECRETS_USER = "4633458b-17de-408a-b874-0445c86b69e6"
KEY_VAULT_SECRETS_OFFICER = "b86a8fe4-44ce-4948-aee5-eccb2c155cd7"
MONITORING_METRICS_PUBLISHER = "3913510d-42f4-4e42-8a64-420c390055eb"
COSMOS_BUILT_IN_DATA_CONTRIBUTOR = "00000000-0000-0000-0000-000000000002"

STORAGE = "Microsoft.Storage/storageAccounts"
KEY_VAULT = "Microsoft.KeyVault/vaults"
APP_INSIGHTS = "Microsoft.Insights/components"
COSMOS = "Microsoft.DocumentDB/databaseAccounts"


class Grant(NamedTuple):
    role: str
    scope_type: str
    principal: str  # the rbac.bicep parameter that carries the principal id


EXPECTED = {
    # Host storage: timer monitor and singleton lock blobs, host keys, the Flex deployment package.
    Grant(STORAGE_BLOB_DATA_OWNER, STORAGE, "appPrincipalId"),
    # Queue trigger, queue output binding and the move to <queue>-poison.
    Grant(STORAGE_QUEUE_DATA_CONTRIBUTOR, STORAGE, "appPrincipalId"),
    # Reading the secrets named by *_SECRET_NAME settings.
    Grant(KEY_VAULT_SECRETS_USER, KEY_VAULT, "appPrincipalId"),
    # Entra-authenticated telemetry (local auth off).
    Grant(MONITORING_METRICS_PUBLISHER, APP_INSIGHTS, "appPrincipalId"),
    # The state store's items (data plane only).
    Grant(COSMOS_BUILT_IN_DATA_CONTRIBUTOR, COSMOS, "appPrincipalId"),
    # The operator who runs azd, to put the secrets in.
    Grant(KEY_VAULT_SECRETS_OFFICER, KEY_VAULT, "deployerPrincipalId"),
}

_GUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.IGNORECASE)


def _role_guid(template: Template, role_definition_id: Any) -> str:
    if isinstance(role_definition_id, dict) and "function" in role_definition_id:
        function = role_definition_id["function"]
        assert function["type"] in {"subscription_resource_id", "resource_id"}
        assert function["parameters"]["resource_type"] == "Microsoft.Authorization/roleDefinitions"
        resolved = template.resolve(function["parameters"]["resource_name_1"])
    else:
        resolved = template.resolve(role_definition_id)
        resolved = getattr(resolved, "expression", resolved)
    assert isinstance(resolved, str)
    guids = _GUID.findall(resolved)
    assert len(guids) == 1, resolved
    return str(guids[0]).lower()


def _principal(template: Template, value: Any) -> str:
    resolved = template.resolve(value)
    assert isinstance(resolved, ParamRef), f"principal {value!r} should be a parameter"
    return resolved.name


def _grants() -> list[tuple[Template, str, Grant]]:
    found: list[tuple[Template, str, Grant]] = []
    for path in bicep_files():
        template = Template(path)
        for symbol, body in template.resources_of_type("Microsoft.Authorization/roleAssignments").items():
            scope = template.symbol_of(body.get("scope"))
            assert scope, f"{path.name}:{symbol} has no resource scope (it would land on the resource group)"
            found.append(
                (
                    template,
                    symbol,
                    Grant(
                        _role_guid(template, body["properties"]["roleDefinitionId"]),
                        template.resources[scope]["type"],
                        _principal(template, body["properties"]["principalId"]),
                    ),
                )
            )
        sql_type = "Microsoft.DocumentDB/databaseAccounts/sqlRoleAssignments"
        for symbol, body in template.resources_of_type(sql_type).items():
            account = template.symbol_of(body["parent"])
            assert account
            assert template.symbol_of(body["properties"]["scope"]) == account, "scope is the whole account"
            found.append(
                (
                    template,
                    symbol,
                    Grant(
                        _role_guid(template, body["properties"]["roleDefinitionId"]),
                        template.resources[account]["type"],
                        _principal(template, body["properties"]["principalId"]),
                    ),
                )
            )
    return found


def test_role_assignments_are_exactly_the_expected_set() -> None:
    grants = [grant for _, _, grant in _grants()]
    assert len(grants) == len(set(grants)), "a role is assigned twice"
    assert set(grants) == EXPECTED


def test_no_owner_or_contributor_anywhere() -> None:
    for path in [*INFRA.rglob("*.bicep"), *INFRA.rglob("*.json")]:
        text = path.read_text().lower()
        assert OWNER not in text, path
        assert CONTRIBUTOR not in text, path


@pytest.mark.parametrize("role", [OWNER, CONTRIBUTOR])
def test_role_guid_extraction_would_see_a_forbidden_role(role: str) -> None:
    template = Template(INFRA / "app" / "rbac.bicep")
    assert _role_guid(template, f"/providers/Microsoft.Authorization/roleDefinitions/{role}") == role


def test_principals_are_the_app_identity_and_the_deployer() -> None:
    root = main()
    _, params = root.module("rbac")
    app_principal = params["appPrincipalId"]["operator"]["operands"]
    assert app_principal["operand_1"] == "identity"
    assert root.modules["identity"]["detail"]["path"].endswith("user-assigned-identity.bicep")
    assert root.resolve(params["deployerPrincipalId"]) == ParamRef(root.path, "principalId")


def test_deployer_role_only_when_a_principal_is_given() -> None:
    for template, symbol, grant in _grants():
        condition = template.resources[symbol]["config"].get("condition")
        if grant.principal == "deployerPrincipalId":
            assert condition, "the deployer's role must be conditional on principalId"
        else:
            assert not condition, f"{symbol} is needed by the app in every deployment"


def test_app_identity_role_assignments_name_the_principal_type() -> None:
    for template, symbol, grant in _grants():
        if grant.principal == "appPrincipalId" and grant.role != COSMOS_BUILT_IN_DATA_CONTRIBUTOR:
            body = template.resource_body(symbol)
            # Without it a freshly created identity can fail the assignment while Entra replicates.
            assert body["properties"]["principalType"] == "ServicePrincipal", symbol
