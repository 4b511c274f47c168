"""The private-networking option (main.bicep ``vnetEnabled``), read with the tests' Bicep evaluator.

With it on, no data service (Storage, Cosmos DB, Key Vault) accepts public traffic, each one the app
uses has a private endpoint with Azure's private DNS zone for its sub-resource, and the function app
integrates with a subnet delegated to ``Microsoft.App/environments`` (Flex Consumption's
delegation). Off, which is the default, nothing of it is deployed and the services stay as before.
Zone names and sub-resources: learn.microsoft.com/azure/private-link/private-endpoint-dns;
the delegation: learn.microsoft.com/azure/azure-functions/flex-consumption-plan (docs/how-to/private-networking.md).
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.infra.bicep import INFRA, Opaque, Template, bicep_files, main

DATA_SERVICE_TYPES = {
    "Microsoft.Storage/storageAccounts",
    "Microsoft.DocumentDB/databaseAccounts",
    "Microsoft.KeyVault/vaults",
}
PRIVATE = {"vnetEnabled": True}
PUBLIC = {"vnetEnabled": False}

# The sub-resources the app reaches and Azure's private DNS zone for each.
ENDPOINTS = {
    "blobEndpoint": ("storage", "blob", "privatelink.blob.core.windows.net"),
    "queueEndpoint": ("storage", "queue", "privatelink.queue.core.windows.net"),
    "cosmosEndpoint": ("cosmos", "Sql", "privatelink.documents.azure.com"),
    "vaultEndpoint": ("keyVault", "vault", "privatelink.vaultcore.azure.net"),
}


def _data_services(arguments: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """module symbol -> the evaluated properties of the data service it deploys."""
    root = main()
    found: dict[str, dict[str, Any]] = {}
    for symbol in root.modules:
        child, _ = root.module(symbol)
        module_arguments = root.module_arguments(symbol, arguments)
        for resource_type in DATA_SERVICE_TYPES:
            for body in child.resources_of_type(resource_type).values():
                found[symbol] = child.evaluate(body["properties"], module_arguments)
    return found


def test_every_data_service_in_infra_is_deployed_by_main() -> None:
    declared = {
        (path.name, symbol)
        for path in bicep_files()
        for resource_type in DATA_SERVICE_TYPES
        for symbol in Template(path).resources_of_type(resource_type)
    }
    assert len(declared) == 3
    assert set(_data_services(PRIVATE)) == {"storage", "cosmos", "keyVault"}


def test_with_vnet_enabled_no_data_service_allows_public_access() -> None:
    for symbol, props in _data_services(PRIVATE).items():
        assert props["publicNetworkAccess"] == "Disabled", symbol
        acls = props.get("networkAcls")
        if acls is not None:
            assert acls["defaultAction"] == "Deny", symbol
            assert not acls.get("ipRules") and not acls.get("virtualNetworkRules"), symbol
        assert not props.get("ipRules") and not props.get("isVirtualNetworkFilterEnabled"), symbol


def test_by_default_the_data_services_stay_public_behind_entra_id() -> None:
    for symbol, props in _data_services(PUBLIC).items():
        assert props["publicNetworkAccess"] == "Enabled", symbol
    assert main().parameters["vnetEnabled"]["default"] is False


@pytest.mark.parametrize("symbol", sorted(ENDPOINTS))
def test_each_data_service_has_a_private_endpoint_with_its_zone(symbol: str) -> None:
    root = main()
    assert root.module_condition(symbol) == "vnetEnabled"
    service, group, zone = ENDPOINTS[symbol]
    _, params = root.module(symbol)
    assert params["serviceId"] == {
        "operator": {
            "type": "property_accessor",
            "operands": {
                "operand_1": service,
                "operand_2": {
                    "operator": {
                        "type": "property_accessor",
                        "operands": {"operand_1": "outputs", "operand_2": "id"},
                    }
                },
            },
        }
    }
    arguments = root.module_arguments(symbol, PRIVATE)
    assert (arguments["groupId"], arguments["dnsZoneName"]) == (group, zone)
    assert isinstance(arguments["subnetId"], Opaque) and isinstance(arguments["vnetId"], Opaque)


def test_the_private_endpoint_module_links_its_zone_and_registers_the_record() -> None:
    template = Template(INFRA / "core/network/private-endpoint.bicep")
    (endpoint,) = template.resources_of_type("Microsoft.Network/privateEndpoints").values()
    connection = endpoint["properties"]["privateLinkServiceConnections"][0]["properties"]
    assert connection["groupIds"] == ["groupId"] and connection["privateLinkServiceId"] == "serviceId"
    (link,) = template.resources_of_type("Microsoft.Network/privateDnsZones/virtualNetworkLinks").values()
    assert link["properties"]["virtualNetwork"]["id"] == "vnetId"
    (group,) = template.resources_of_type("Microsoft.Network/privateEndpoints/privateDnsZoneGroups").values()
    assert group["properties"]["privateDnsZoneConfigs"][0]["properties"]["privateDnsZoneId"]


def test_only_the_network_modules_depend_on_vnet_enabled() -> None:
    root = main()
    conditional = {symbol for symbol in root.modules if root.module_condition(symbol) is not None}
    assert conditional == {"network", *ENDPOINTS}


def test_the_app_subnet_is_delegated_to_flex_consumption_and_takes_the_nat_gateway() -> None:
    template = Template(INFRA / "core/network/vnet.bicep")
    (vnet,) = template.resources_of_type("Microsoft.Network/virtualNetworks").values()
    subnets = {subnet["name"]: subnet["properties"] for subnet in vnet["properties"]["subnets"]}
    assert set(subnets) == {"app", "private-endpoints"}
    delegations = subnets["app"]["delegations"]
    assert [d["properties"]["serviceName"] for d in delegations] == ["Microsoft.App/environments"]
    # The endpoints live in their own subnet: Flex's subnet may hold nothing else.
    assert "delegations" not in subnets["private-endpoints"]
    for outbound, attached in (("natGateway", True), ("default", False)):
        nat = template.evaluate(subnets["app"]["natGateway"], {"outbound": outbound})
        assert (nat is not None) is attached, outbound


def test_the_nat_gateway_has_one_static_standard_public_ip() -> None:
    template = Template(INFRA / "core/network/vnet.bicep")
    (ip,) = template.resources_of_type("Microsoft.Network/publicIPAddresses").values()
    assert ip["sku"]["name"] == "Standard"
    assert ip["properties"]["publicIPAllocationMethod"] == "Static"
    (nat,) = template.resources_of_type("Microsoft.Network/natGateways").values()
    assert len(nat["properties"]["publicIpAddresses"]) == 1
    assert main().parameters["vnetOutbound"]["default"] == "natGateway"


def test_the_function_app_integrates_only_with_vnet_enabled() -> None:
    root = main()
    api, _ = root.module("api")
    (site,) = api.resources_of_type("Microsoft.Web/sites").values()
    expression = site["properties"]["virtualNetworkSubnetId"]
    private = root.module_arguments("api", PRIVATE)["virtualNetworkSubnetId"]
    assert isinstance(private, Opaque) and "appSubnetId" in private.expression
    public = root.module_arguments("api", PUBLIC)
    assert public["virtualNetworkSubnetId"] == ""
    assert api.evaluate(expression, public) is None


def test_the_outbound_address_and_identity_principal_are_azd_outputs() -> None:
    outputs = main().json["outputs"]
    assert {"AZURE_OUTBOUND_IP_ADDRESS", "AZURE_USER_ASSIGNED_IDENTITY_PRINCIPAL_ID"} <= set(outputs)
